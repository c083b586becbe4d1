"""``dataset=coco`` on what scripts/prepare_coco.py writes from a generated COCO 2014 (tests/cocogen.py), and on
the AFA/ToCo released layout: the datamodule, one training step per image-tag method, wsss.infer,
wsss.pseudo_label and wsss.evaluate at 81 classes (against a hand-computed confusion matrix)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from cocogen import CLASS_NAMES, NUM_FG, labels_of, write_tiny_coco
from conftest import CONF_DIR
from wsss.data.coco import COCOLayout
from wsss.data.formats import read_label_png, save_pickled_dict, write_label_png, write_split_list
from wsss.engine import build_datamodule, build_method, build_trainer
from wsss.prepare.coco import prepare

SIZES = ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32", "++trainer.strategy=auto",
         "++trainer.sync_batchnorm=false", "dataset.batch_size=2", "dataset.val_batch_size=1", "dataset.num_workers=0",
         "++dataset.crop_size=64", "logger=none"]


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    base = tmp_path_factory.mktemp("coco")
    expected = write_tiny_coco(base / "COCO2014", size=(72, 80))
    prepare(base / "COCO2014", base / "coco_wsss", workers=1, progress=False)
    return base / "coco_wsss", expected


def _compose(name: str, overrides, root: Path, out: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=name, overrides=["dataset=coco", f"dataset.root={root}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


def test_config_names_are_the_json_names():
    cfg = yaml.safe_load((CONF_DIR / "dataset" / "coco.yaml").read_text())
    assert cfg["class_names"] == CLASS_NAMES and cfg["num_classes"] == 81


def test_datamodule_reads_the_prepared_layout(coco, tmp_path):
    root, expected = coco
    dm = build_datamodule(_compose("train", SIZES, root, tmp_path))
    dm.setup("fit")
    assert dm.train_set.ids == [f"COCO_train2014_{n:012d}" for n in (1, 2, 5)]
    assert dm.val_set.layout.mask_dir("val") == root / "SegmentationClass" / "val2014"
    sample = dm.val_set[0]
    assert sample["cls"].shape == (NUM_FG,)
    np.testing.assert_array_equal(sample["mask"].numpy(), expected["val2014"][sample["name"]])
    np.testing.assert_array_equal(sample["cls"].numpy(), labels_of(expected["val2014"][sample["name"]]))
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[:2] == (2, 3) and batch["cls"].shape == (2, NUM_FG)


def _released_layout(root: Path) -> Path:
    """The AFA/ToCo family's files: images in train2014/ val2014/, masks in coco_anno/<subset>/, their lists and an
    81-wide uint8 cls_labels_onehot.npy in a lists folder of their own."""
    afa = root.parent / "afa"
    if afa.exists():
        return afa
    (afa / "coco_anno").mkdir(parents=True)
    for subset in ("train2014", "val2014"):
        (afa / subset).symlink_to((root / "images" / subset).resolve())
        (afa / "coco_anno" / subset).symlink_to(root / "SegmentationClass" / subset)
    onehot = {}
    for split in ("train", "val"):
        ids = (root / "ImageSets" / f"{split}.txt").read_text().split()
        write_split_list(afa / "name_lists" / f"{split}.txt", ids)
        for i in ids:
            gt = read_label_png(root / "SegmentationClass" / f"{split}2014" / f"{i}.png")
            vec = np.zeros(81, np.uint8)
            vec[[v for v in np.unique(gt) if 0 < v < 255]] = 1
            onehot[i] = vec
    save_pickled_dict(afa / "name_lists" / "cls_labels_onehot.npy", onehot)
    return afa


def test_released_afa_layout_reads_as_it_is(coco, tmp_path):
    root, expected = coco
    afa = _released_layout(root)
    cfg = _compose("train", SIZES + ["dataset.images=.", "dataset.masks=coco_anno", "dataset.lists=name_lists"],
                   afa, tmp_path)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    layout = dm.train_set.layout
    assert isinstance(layout, COCOLayout) and layout.cls_labels_file().name == "cls_labels_onehot.npy"
    for name in dm.val_set.ids:
        assert dm.val_set.layout.image_path(name) == afa / "val2014" / f"{name}.jpg"
        np.testing.assert_array_equal(dm.val_set.cls_labels[name], labels_of(expected["val2014"][name]))
    assert len(dm.train_set) == 3


@pytest.mark.parametrize("method", ["cam", "rtc", "deeplab", "wsfcn", "recurseed", "eps", "hsc"])
def test_each_image_tag_method_trains_one_step_on_coco(coco, tmp_path, method):
    """Every image-tag method on the prepared COCO layout; EPS and HSC where saliency maps exist (ROOT/saliency)."""
    root, expected = coco
    if method in ("eps", "hsc"):
        for split in ("train2014", "val2014"):
            for name, gt in expected[split].items():
                write_label_png(root / "saliency" / f"{name}.png", ((gt > 0) & (gt < 255)).astype(np.uint8) * 255,
                                palette=False)
    extra = {"deeplab": [f"dataset.pseudo_label_dir={root / 'SegmentationClass' / 'train2014'}"]}.get(
        method, [] if method == "cam" else [f"preset=synthetic_{method}"])  # CPU sizes: the data are tested
    cfg = _compose("train", [f"method={method}", *SIZES, *extra], root, tmp_path)
    datamodule, model = build_datamodule(cfg), build_method(cfg)
    assert model.num_classes == 81
    trainer = build_trainer(cfg, fast_dev_run=True, enable_progress_bar=False)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 1


def test_infer_then_pseudo_label_on_coco(coco, tmp_path):
    from wsss.infer import run as infer
    from wsss.methods.cam import CAMModule
    from wsss.pseudo_label import run as pseudo_label

    root, _ = coco
    torch.manual_seed(0)
    model = CAMModule(backbone={"name": "tiny"}, num_classes=81, class_names=CLASS_NAMES,
                      bg={"rule": "threshold", "threshold": 0.3}).eval()
    cfg = _compose("infer", ["ckpt=unused", "device=cpu", "loader_workers=0", "workers=1", "progress=false",
                             "split=val", "scales=[1.0]", "flip=false"], root, tmp_path)
    with open_dict(cfg):
        cfg.out_dir = str(tmp_path / "infer")
    metrics = infer(cfg, model)
    ids = (root / "ImageSets" / "val.txt").read_text().split()
    assert sorted(p.stem for p in (tmp_path / "infer" / "pred").glob("*.png")) == ids
    assert len(metrics["pred"]["IoU_seam"]) == 81  # scored against SegmentationClass/val2014
    cfg = _compose("pseudo_label", [f"scores_dir={tmp_path / 'infer' / 'scores'}", "split=val", "workers=0",
                                    "progress=false", f"out_dir={tmp_path / 'pl'}"], root, tmp_path)
    res = pseudo_label(cfg)
    assert res["written"] == len(ids) and res["num_scored"] == len(ids) and len(res["IoU"]) == 81
    assert res["gt_dir"] == str(root / "SegmentationClass" / "val2014")


def test_evaluate_at_81_classes_equals_a_hand_computed_confusion(tmp_path):
    """Two 4x5 images with classes 0, 1, 45, 80 and crowd 255; the confusion counted by hand below."""
    from wsss.evaluation.run import run as evaluate

    gt1 = np.array([[0, 0, 1, 1, 255], [0, 0, 1, 1, 255], [80, 80, 0, 0, 0], [80, 80, 0, 0, 0]], np.uint8)
    pr1 = np.array([[0, 1, 1, 1, 80], [0, 0, 1, 0, 80], [80, 80, 80, 0, 0], [80, 45, 0, 0, 0]], np.uint8)
    gt2 = np.array([[45, 45, 45, 0, 0], [45, 45, 45, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 255]], np.uint8)
    pr2 = np.array([[45, 45, 0, 0, 0], [45, 45, 45, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], np.uint8)
    for sub, arrays in (("gt", (gt1, gt2)), ("pred", (pr1, pr2))):
        for n, a in enumerate(arrays):
            write_label_png(tmp_path / sub / f"COCO_val2014_{n:012d}.png", a, palette=False)
    write_split_list(tmp_path / "val.txt", [f"COCO_val2014_{n:012d}" for n in range(2)])
    # (GT, prediction) -> pixels, counted row by row of each image (255 skipped): image 1 gives (0,0) 1+2+2+3,
    # (0,1) 1, (0,80) 1, (1,1) 3, (1,0) 1, (80,80) 3, (80,45) 1; image 2 (0,0) 2+1+5+4, (0,1) 1, (45,45) 5, (45,0) 1
    conf = {(0, 0): 8 + 12, (0, 1): 1 + 1, (0, 80): 1, (1, 1): 3, (1, 0): 1,
            (80, 80): 3, (80, 45): 1, (45, 45): 5, (45, 0): 1}
    assert sum(conf.values()) == 18 + 19
    tp = {c: conf.get((c, c), 0) for c in (0, 1, 45, 80)}
    t = {c: sum(v for (g, _), v in conf.items() if g == c) for c in (0, 1, 45, 80)}
    p = {c: sum(v for (_, q), v in conf.items() if q == c) for c in (0, 1, 45, 80)}
    iou = {c: tp[c] / (t[c] + p[c] - tp[c]) for c in tp}
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[
            "dataset=coco", f"pred_dir={tmp_path / 'pred'}", f"gt_dir={tmp_path / 'gt'}", f"list={tmp_path / 'val.txt'}",
            "type=png", "workers=2", "progress=false", f"out_dir={tmp_path / 'eval'}"])
    res = evaluate(cfg)
    assert res["num_classes"] == 81 and len(res["IoU_seam"]) == 81
    matrix = np.asarray(res["confusion"])
    for (g, q), v in conf.items():
        assert matrix[g, q] == v, (g, q)
    assert matrix.sum() == sum(conf.values())
    names = CLASS_NAMES
    for c, v in iou.items():
        assert res["IoU_seam"][names[c]] == pytest.approx(v, abs=1e-9)
    # SEAM's convention: the mean over all 81 classes (absent ones count 0); mIoU: over the 4 present
    assert res["mIoU_seam"] == pytest.approx(sum(iou.values()) / 81, abs=1e-9)
    assert res["mIoU"] == pytest.approx(sum(iou.values()) / 4, abs=1e-9)
    assert len(json.loads((tmp_path / "eval" / "metrics.json").read_text())["class_names"]) == 81


def test_evaluate_refuses_the_voc_config_on_coco_gt(coco, tmp_path):
    """COCO's GT sits one level below the root that holds class_names.txt; the check still finds it."""
    from wsss.evaluation.run import run as evaluate

    root, _ = coco
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[
            f"pred_dir={root / 'SegmentationClass' / 'val2014'}", f"gt_dir={root / 'SegmentationClass' / 'val2014'}",
            f"list={root / 'ImageSets' / 'val.txt'}", "type=png", "progress=false", f"out_dir={tmp_path / 'e'}"])
    with pytest.raises(ValueError, match="class_names.txt lists 81 classes"):
        evaluate(cfg)


def test_spml_with_tag_supervision_trains_one_step_on_coco(coco, tmp_path):
    """SPML on COCO needs what it needs on VOC, inside the root: CAM score dicts (cam/ID.npy, e.g. from wsss.infer
    of a CAM model) and an over-segmentation (hed/ID.png); the layout needs nothing more."""
    from scipy import ndimage

    from wsss.data.formats import save_score_dict

    root, expected = coco
    for name, gt in expected["train2014"].items():
        save_score_dict(root / "cam" / f"{name}.npy", {int(c) - 1: ndimage.gaussian_filter((gt == c).astype(np.float32), 2)
                                                        for c in np.unique(gt) if 0 < c < 255})
        cells = (np.arange(gt.shape[0])[:, None] // 8) * 16 + np.arange(gt.shape[1])[None, :] // 8
        write_label_png(root / "hed" / f"{name}.png", cells.astype(np.uint8), palette=False)
    cfg = _compose("train", ["method=spml", "supervision=tag", "preset=synthetic_spml", "supervision.loader.require_weak=true",
                             "supervision.loader.require_segments=true", *SIZES], root, tmp_path)
    datamodule, model = build_datamodule(cfg), build_method(cfg)
    trainer = build_trainer(cfg, fast_dev_run=True, enable_progress_bar=False)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 1


def test_evaluate_overlays_find_the_coco_images(coco, tmp_path):
    from wsss.evaluation.run import default_image_dir, run as evaluate

    root, _ = coco
    gt = root / "SegmentationClass" / "val2014"
    assert default_image_dir(gt) == root / "images" / "val2014"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[
            "dataset=coco", f"pred_dir={gt}", f"gt_dir={gt}", f"list={root / 'ImageSets' / 'val.txt'}", "type=png",
            "progress=false", "workers=0", "overlays=1", f"out_dir={tmp_path / 'e'}"])
    res = evaluate(cfg)
    assert res["mIoU"] == pytest.approx(1.0)
    assert list((tmp_path / "e" / "overlays").glob("*.png")) or list((tmp_path / "e" / "overlays").glob("*.jpg"))
