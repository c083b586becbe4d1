"""RecurSeed's released segmentation networks (DeepLab v3+ ResNet-101, 679 tensors; DeepLab v2 ResNet-101, 632
tensors) under method=deeplab, and parity of `wsss.infer` with the unchanged reference `infer_seg.py` +
`convert_seed_to_pseudo_masks.py` ("MS" tag) on the seeded DeepLab v3+ file (tests/fixtures/recurseed/README.md)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image

from test_recurseed_inference import FIX, IMAGES, official_state, write_voc
from wsss.checkpoints import deeplab as deeplab_release
from wsss.checkpoints import recurseed as release
from wsss.inference.loading import load_for_inference
from wsss.inference.tool import run
from wsss.paths import config_dir


def infer_cfg(root: Path, ckpt: Path, out: Path, experiment: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="infer", overrides=[
            "method=deeplab", f"experiment={experiment}", f"ckpt={ckpt}", f"dataset.root={root}", "split=val",
            "device=cpu", "loader_workers=0", "workers=1", "progress=false", "dataset.packaged_lists=false"])
    with open_dict(cfg):
        cfg.out_dir = str(out)
    return cfg


@pytest.mark.parametrize("layout,count,experiment", [("deeplabv3plus", 679, "recurseed_voc_deeplabv3plus"),
                                                     ("deeplabv2", 632, "recurseed_voc_deeplabv2")])
def test_released_segmentation_layouts_load_strictly_with_their_recipe(tmp_path, layout, count, experiment):
    state = official_state(layout)
    assert len(state) == count and release.layout_of(state) == layout
    ckpt = tmp_path / f"{layout}.pth"
    torch.save(state, ckpt)
    assert deeplab_release.is_official(torch.load(ckpt, weights_only=True))
    assert deeplab_release.official_experiment(ckpt) == experiment
    model = load_for_inference(infer_cfg(tmp_path, ckpt, tmp_path / "out", experiment), ckpt, "deeplab")
    own = model.state_dict()
    mapped = release.convert(state)
    assert set(mapped) == {k for k in own if k.startswith(("backbone.", "head."))}
    assert all(torch.equal(own[k], v.to(own[k].dtype)) for k, v in mapped.items())
    if layout == "deeplabv3plus":  # output stride 8: layer4 at dilation 4 except its first block, ASPP 1/12/24/36
        assert model.backbone.layer4[0].conv2.dilation == (1, 1) and model.backbone.layer4[1].conv2.dilation == (4, 4)
        assert model.head.aspp.branches[3][0].dilation == (36, 36)
    with pytest.raises(ValueError, match="experiment=recurseed_voc_deeplab"):  # the single-stage importer refuses it
        release.load_state(torch.nn.Module(), state, release.RSEPM, str(ckpt))  # (layout checked before the model)


@pytest.mark.slow
def test_infer_reproduces_infer_seg_and_its_crf(tmp_path):
    """`wsss.infer method=deeplab experiment=recurseed_voc_deeplabv3plus ckpt=...`: score dicts of the classes
    kept at max probability >= 0.05 with the reference's probabilities, CRF PNGs equal to the reference's."""
    ckpt = tmp_path / "last.pth"
    torch.save(official_state("deeplabv3plus"), ckpt)
    root = tmp_path / "VOC2012"
    write_voc(root)
    out = tmp_path / "out"
    cfg = infer_cfg(root, ckpt, out, "recurseed_voc_deeplabv3plus")
    run(cfg, load_for_inference(cfg, ckpt, "deeplab"))
    ref = np.load(FIX / "reference_outputs.npz")
    for name in IMAGES:
        keys = ref[f"seg_{name}_keys"].tolist()
        scores = np.load(out / "scores" / f"{name}.npy", allow_pickle=True).item()
        assert [k + 1 for k in sorted(scores)] == [k for k in keys if k > 0]
        fg_rows = [i for i, k in enumerate(keys) if k > 0]
        assert np.abs(np.stack([scores[k] for k in sorted(scores)]) - ref[f"seg_{name}_seed"][fg_rows]).max() < 1e-4
        crf = np.asarray(Image.open(out / "crf" / f"{name}.png"))
        assert (crf == np.asarray(Image.open(FIX / f"seg_{name}_crf.png"))).mean() >= 0.999


def test_a_single_kept_class_gives_an_all_zero_mask(tmp_path):
    """convert_seed_to_pseudo_masks.py: `len(class_keys) > 1` or zeros, whichever class survived."""
    from wsss.inference.runner import crf_job
    from wsss.postprocess.crf import load_preset

    image = np.asarray(Image.open(FIX / f"{IMAGES[0]}.png").convert("RGB"))
    probs = np.ones((1,) + image.shape[:2], np.float32)
    out = tmp_path / "single_class.png"
    crf_job({"image": image, "probs": probs, "class_ids": [15], "preset": load_preset("recurseed_ms"),
             "out": str(out)})
    assert not np.asarray(Image.open(out)).any()


def test_the_coco_deeplabv3plus_release_picks_the_coco_recipe_and_loads_strictly(tmp_path):
    """README.md:107's COCO DeepLab v3+ file: the same 679 tensors with an 81-class classifier; wsss.infer
    method=deeplab builds experiment=recurseed_coco_deeplabv3plus for it (dataset=coco, 81 classes)."""
    from cocogen import write_tiny_coco
    from wsss.prepare.coco import prepare

    state = official_state("deeplabv3plus")
    key = "decoder.classifier.4.weight"
    state[key] = torch.randn(81, *state[key].shape[1:], generator=torch.Generator().manual_seed(0)) * 0.01
    ckpt = tmp_path / "coco_deeplabv3plus.pth"
    torch.save(state, ckpt)
    experiment = deeplab_release.official_experiment(ckpt)
    assert experiment == "recurseed_coco_deeplabv3plus"
    assert deeplab_release.official_experiment(tmp_path / "missing.pth") == "deeplabv2_voc"
    write_tiny_coco(tmp_path / "COCO2014", size=(40, 48))
    prepare(tmp_path / "COCO2014", tmp_path / "coco_wsss", workers=1, progress=False)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="infer", overrides=[
            "method=deeplab", f"experiment={experiment}", f"ckpt={ckpt}", f"dataset.root={tmp_path / 'coco_wsss'}",
            "split=val", "device=cpu"])
    assert cfg.dataset.num_classes == 81 and cfg.backbone.output_stride == 8
    model = load_for_inference(cfg, ckpt, "deeplab")
    own = model.state_dict()
    assert own["head.decoder.classifier.weight"].shape[0] == 81
    assert torch.equal(own["head.decoder.classifier.weight"], state[key])
