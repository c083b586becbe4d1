"""`wsss.infer`: batched multi-scale + flip equals the per-image loop, files and formats, resume, CRF, errors,
the output folder and its settings record, the metric names."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image

from conftest import CONF_DIR, compose_train_cfg
from wsss.data.formats import load_score_dict, read_label_png, save_cls_labels_npy, write_label_png
from wsss.infer import run
from wsss.inference.loading import load_for_inference
from wsss.methods.cam import CAMModule
from wsss.outputs import SettingsMismatch
from wsss.postprocess.crf import load_preset, refine

MEAN, STD = np.array((0.485, 0.456, 0.406), np.float32), np.array((0.229, 0.224, 0.225), np.float32)
SIZES = [(64, 64), (48, 64), (64, 40), (48, 64), (64, 64), (48, 64), (64, 40)]
NAMES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle"]


@pytest.fixture(scope="module")
def mixed_root(tmp_path_factory, synthetic_root):
    """A VOC-layout folder with three image sizes (crops of the synthetic val images) and real GT."""
    root = tmp_path_factory.mktemp("mixed") / "VOC"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    src_ids = (synthetic_root / "ImageSets/Segmentation/val.txt").read_text().split()
    ids, labels = [], {}
    for i, (h, w) in enumerate(SIZES):
        sid = src_ids[i]
        img = np.asarray(Image.open(synthetic_root / "JPEGImages" / f"{sid}.jpg").convert("RGB"))[:h, :w]
        gt = read_label_png(synthetic_root / "SegmentationClass" / f"{sid}.png")[:h, :w]
        Image.fromarray(img).save(root / "JPEGImages" / f"img{i}.jpg", quality=95)
        write_label_png(root / "SegmentationClass" / f"img{i}.png", gt)
        vec = np.zeros(5, np.float32)
        present = np.unique(gt)
        present = present[(present > 0) & (present < 6)]
        vec[present - 1] = 1
        if not vec.any():
            vec[0] = 1
        labels[f"img{i}"] = vec
        ids.append(f"img{i}")
    save_cls_labels_npy(root / "cls_labels.npy", labels)
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids) + "\n")
    (root / "class_names.txt").write_text("\n".join(NAMES) + "\n")  # a 6-class set says so, as the synthetic one
    return root


@pytest.fixture(scope="module")
def cam_model():
    torch.manual_seed(0)
    model = CAMModule(backbone={"name": "tiny"}, num_classes=6, class_names=NAMES,
                      bg={"rule": "threshold", "threshold": 0.3})
    return model.eval()


@pytest.fixture(scope="module")
def cam_ckpt(tmp_path_factory, cam_model):
    """``cam_model`` as a wsss Lightning checkpoint (what ``fit`` writes), without training."""
    import pytorch_lightning as pl

    path = tmp_path_factory.mktemp("ckpt") / "cam.ckpt"
    torch.save({"state_dict": cam_model.state_dict(), "hyper_parameters": dict(cam_model.hparams),
                "pytorch-lightning_version": pl.__version__,
                "wsss": {"method": cam_model.method_name, "target": "wsss.methods.cam.CAMModule"}}, path)
    return path


def infer_cfg(root: Path, out: Path, *overrides):
    voc = not any(o.startswith("dataset=") for o in overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="infer", overrides=["ckpt=unused", f"dataset.root={root}", "device=cpu",
                                                      "loader_workers=0", "workers=1", "progress=false", *overrides]
                      + (["dataset.packaged_lists=false"] if voc else []))
    with open_dict(cfg):
        cfg.out_dir = str(out)
    return cfg


def per_image_reference(model, image: np.ndarray, scales, flip=True) -> torch.Tensor:
    """The seed repos' loop: one image, one scale, one flip per forward (PIL bicubic, round sizes), summed."""
    h, w = image.shape[:2]
    total = 0
    with torch.no_grad():
        for s in scales:
            size = (round(w * s), round(h * s))
            arr = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC) if size != (w, h) else image)
            x = torch.from_numpy(((arr / 255.0 - MEAN) / STD).astype(np.float32).transpose(2, 0, 1))[None]
            for f in ([False, True] if flip else [False]):
                raw = model.raw_scores(x.flip(-1) if f else x)
                raw = F.interpolate(raw, size=(h, w), mode="bilinear", align_corners=False)
                total = total + (raw.flip(-1) if f else raw)
    return total[0]


def test_batched_outputs_equal_the_per_image_loop(tmp_path, mixed_root, cam_model):
    scales = [1.0, 0.5, 1.5, 2.0]
    cfg = infer_cfg(mixed_root, tmp_path / "out", "batch_size=3", "scales=[1.0,0.5,1.5,2.0]", "flip=true")
    metrics = run(cfg, cam_model)
    for i in range(len(SIZES)):
        image = np.asarray(Image.open(mixed_root / "JPEGImages" / f"img{i}.jpg").convert("RGB"))
        ref = per_image_reference(cam_model, image, scales)
        ref_norm = F.relu(ref) / (F.relu(ref).flatten(1).max(1).values[:, None, None] + 1e-5)
        label = np.load(mixed_root / "cls_labels.npy", allow_pickle=True).item()[f"img{i}"]
        keys = [int(k) for k in np.nonzero(label)[0]]
        scores = load_score_dict(tmp_path / "out" / "scores" / f"img{i}.npy", shape=SIZES[i], num_fg=5)
        assert sorted(scores) == keys  # only the image-level label's classes, as in SEAM
        for k in keys:
            assert scores[k].dtype == np.float32
            assert np.abs(scores[k] - ref_norm[k].numpy()).max() < 1e-5
        # the prediction: constant background 0.3 over the labelled classes (SEAM's rule)
        stack = np.concatenate([np.full((1,) + SIZES[i], 0.3, np.float32), ref_norm[keys].numpy()])
        expected = np.array([0] + [k + 1 for k in keys])[stack.argmax(0)]
        pred_img = Image.open(tmp_path / "out" / "pred" / f"img{i}.png")
        assert pred_img.mode == "P"
        assert (np.asarray(pred_img) == expected).mean() > 0.999
    assert set(metrics["pred"]) >= {"mIoU", "mIoU_seam", "IoU"}
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["val/mIoU"] == pytest.approx(metrics["pred"]["mIoU"]) and 0 <= saved["val/mIoU"] <= 1
    assert set(saved["val/IoU"]) == set(NAMES)
    assert saved["protocol"]["scales"] == scales and saved["protocol"]["flip"] is True
    assert saved["protocol"]["background"] == {"rule": "threshold", "threshold": 0.3, "alpha": None,
                                               "chosen": "fixed", "source": "method.bg (cam)"}


def test_resume_skips_done_images_and_overwrite_redoes_them(tmp_path, mixed_root, cam_model):
    out = tmp_path / "out"
    run(infer_cfg(mixed_root, out, "batch_size=2"), cam_model)
    files = sorted(out.glob("*/*.*"))
    assert len(files) == 2 * len(SIZES)
    stamp = {p: p.stat().st_mtime_ns for p in files}
    (out / "pred" / "img3.png").unlink()  # as if killed before this image's PNG was renamed into place
    run(infer_cfg(mixed_root, out, "batch_size=2"), cam_model)
    changed = {p.relative_to(out).as_posix() for p in files if p.stat().st_mtime_ns != stamp[p]}
    assert changed == {"scores/img3.npy", "pred/img3.png"}  # only the unfinished image was redone
    assert not list(out.rglob("*.tmp*")) and not list(out.rglob(".*"))
    run(infer_cfg(mixed_root, out, "batch_size=2", "overwrite=true"), cam_model)
    assert all(p.stat().st_mtime_ns != stamp[p] for p in files if p.name != "img3.png")


def test_crf_preset_in_worker_processes_matches_refine_on_the_stored_scores(tmp_path, mixed_root, cam_model):
    out = tmp_path / "out"
    run(infer_cfg(mixed_root, out, "crf=seam", "workers=2", "scales=[1.0]", "flip=false"), cam_model)
    preset = load_preset("seam")
    for i in range(len(SIZES)):
        scores = load_score_dict(out / "scores" / f"img{i}.npy")
        keys = sorted(scores)
        image = np.asarray(Image.open(mixed_root / "JPEGImages" / f"img{i}.jpg").convert("RGB"))
        expected = refine(image, np.stack([scores[k] for k in keys]), keys, preset, None, 6)
        assert np.array_equal(read_label_png(out / "crf" / f"img{i}.png"), expected)


def test_overlays_show_the_worst_and_best_images_with_their_crf(tmp_path, mixed_root, cam_model):
    from wsss.evaluation.examples import image_miou

    out = tmp_path / "out"
    run(infer_cfg(mixed_root, out, "crf=seam", "workers=0", "scales=[1.0]", "flip=false", "overlays=1"), cam_model)
    rows = [r.split(",") for r in (out / "per_image_iou.csv").read_text().splitlines()[1:]]
    assert len(rows) == len(SIZES) and [float(r[2]) for r in rows] == sorted(float(r[2]) for r in rows)
    worst = rows[0][1]
    gt = read_label_png(mixed_root / "SegmentationClass" / f"{worst}.png")
    assert float(rows[0][2]) == pytest.approx(image_miou(gt, read_label_png(out / "pred" / f"{worst}.png")), abs=1e-6)
    assert {p.name for p in (out / "overlays").iterdir()} == {f"worst_01_{worst}.png", f"best_01_{rows[-1][1]}.png"}


def test_wandb_run_gets_metrics_panels_and_the_run_record(tmp_path, mixed_root, cam_model, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = infer_cfg(mixed_root, tmp_path / "out", "scales=[1.0]", "flip=false", "overlays=1", "logger=wandb")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "out")
        cfg.logger.wandb.save_dir = str(tmp_path)
    run(cfg, cam_model)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = {p.name.rsplit("_", 2)[0] for p in (runs[0] / "files" / "media").rglob("*.*")}
    assert {"worst_images", "best_images", "per_class"} <= media  # the panels on disk, in W&B too
    logged = next(runs[0].glob("run-*.wandb")).read_bytes()  # offline: config and tags live in the run file
    assert b"wsss_run" in logged and b"tool=infer" in logged and b"method=cam" in logged


def test_compact_scores_are_small_and_read_everywhere(tmp_path, mixed_root, cam_model):
    """scores_format=npz16: float16 maps in a compressed .npz; evaluate's curve reads them within 1e-3 of the .npy."""
    from wsss.metrics.folders import evaluate_dir

    full, compact = tmp_path / "npy", tmp_path / "npz"
    run(infer_cfg(mixed_root, full, "scales=[1.0]", "flip=false", "classes=all"), cam_model)
    run(infer_cfg(mixed_root, compact, "scales=[1.0]", "flip=false", "classes=all", "scores_format=npz16"), cam_model)
    npy = sorted((full / "scores").glob("*.npy"))
    npz = sorted((compact / "scores").glob("*.npz"))
    assert [p.stem for p in npy] == [p.stem for p in npz] and not list((compact / "scores").glob("*.npy"))
    ratio = sum(p.stat().st_size for p in npz) / sum(p.stat().st_size for p in npy)
    assert ratio < 0.5, ratio  # float16 halves; compression of smooth maps takes more
    for a, b in zip(npy, npz):
        x, y = load_score_dict(a), load_score_dict(b)
        assert sorted(x) == sorted(y) and all(np.abs(x[k] - y[k]).max() < 1e-3 for k in x)
    ids = [p.stem for p in npy]
    curve = [t / 20 for t in range(1, 15)]
    res = [evaluate_dir(d / "scores", mixed_root / "SegmentationClass", ids, "npy", 6, curve_thresholds=curve)
           for d in (full, compact)]
    assert abs(res[0]["curve"]["best"]["mIoU_seam"] - res[1]["curve"]["best"]["mIoU_seam"]) < 1e-3
    assert json.loads((compact / "settings.json").read_text())["scores_format"] == "npz16"


def test_cli_on_a_trained_checkpoint_then_evaluate_reads_the_scores(tmp_path, synthetic_root):
    from wsss.engine import fit

    cfg = compose_train_cfg(tmp_path / "train", synthetic_root, ["debug=fast", "logger=none"])
    fit(cfg)
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    out = tmp_path / "infer"
    cmd = [sys.executable, "-m", "wsss.infer", f"ckpt={ckpt}", f"dataset.root={synthetic_root}", "split=val",
           f"out_dir={out}", "batch_size=4", f"hydra.run.dir={tmp_path / 'run'}", "loader_workers=1"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("val/mIoU=")
    ids = (synthetic_root / "ImageSets/Segmentation/val.txt").read_text().split()
    assert sorted(p.stem for p in (out / "scores").glob("*.npy")) == sorted(ids)
    assert sorted(p.stem for p in (out / "pred").glob("*.png")) == sorted(ids)
    from wsss.metrics.folders import evaluate_dir

    res = evaluate_dir(out / "scores", synthetic_root / "SegmentationClass", ids, "npy", 6, threshold=0.55)
    png = evaluate_dir(out / "pred", synthetic_root / "SegmentationClass", ids, "png", 6)
    assert res["mIoU_seam"] == pytest.approx(png["mIoU_seam"], abs=2e-3)  # same rule, npy vs PNG


def test_cli_writes_log_config_and_metrics_into_out_dir(tmp_path, mixed_root, cam_ckpt):
    """Bug 9/10: out_dir is the run folder (log, .hydra, config.yaml with the recipe that ran, metrics.json in
    fractions named val/...), no outputs/ folder appears, the last line is val/mIoU=0.XXXX; a failing run
    leaves its traceback in the log."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "wsss.infer", f"ckpt={cam_ckpt}", f"dataset.root={mixed_root}",
           "dataset.packaged_lists=false", "split=val", f"out_dir={out}", "loader_workers=0", "workers=1",
           "device=cpu", "progress=false", "scales=[1.0,0.5]", "crf=seam"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "outputs").exists()
    assert (out / ".hydra" / "config.yaml").is_file() and (out / "infer.log").stat().st_size > 0
    last = proc.stdout.strip().splitlines()[-1]
    saved = json.loads((out / "metrics.json").read_text())
    assert last == f"val/mIoU={saved['val/mIoU']:.4f}"
    assert "val/crf/mIoU=" in proc.stdout and "%" not in proc.stdout
    assert saved["tool"] == "infer" and saved["split"] == "val" and saved["protocol"]["crf"] == "seam"
    assert 0 <= saved["val/crf/mIoU"] <= 1 and "val/crf/IoU" in saved and "val/mIoU_seam" in saved
    from omegaconf import OmegaConf

    ran = OmegaConf.load(out / "config.yaml")
    assert list(ran.scales) == [1.0, 0.5]  # given on the command line
    assert ran.flip is False and ran.resize == "pil_bicubic" and ran.classes == "label"  # the method's recipe
    assert ran.crf.name == "seam" and ran.bg.threshold == 0.3 and ran.out_dir == str(out)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["ckpt"]["path"] == str(cam_ckpt) and settings["ckpt"]["size"] == cam_ckpt.stat().st_size
    assert settings["scales"] == [1.0, 0.5] and settings["crf"]["name"] == "seam"

    bad = tmp_path / "bad"
    proc = subprocess.run(cmd[:-1] + [f"out_dir={bad}", "split=nosuch"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    logged = (bad / "infer.log").read_text()
    assert "split list 'nosuch' not found" in logged and "Traceback" in logged


def test_resume_refuses_outputs_of_other_settings(tmp_path, mixed_root, cam_model):
    """Bug 14: a rerun into the same out_dir with other settings stops, naming both values and the fix."""
    out = tmp_path / "out"
    run(infer_cfg(mixed_root, out, "scales=[1.0]", "flip=false", "crf=none"), cam_model)
    with pytest.raises(SettingsMismatch, match=r"scales\.0.*|scales.*\[1\.0\].*overwrite=true"):
        run(infer_cfg(mixed_root, out, "scales=[1.0,0.5]", "flip=false", "crf=none"), cam_model)
    with pytest.raises(SettingsMismatch, match=r"flip: false there, true now.*overwrite=true.*another out_dir"):
        run(infer_cfg(mixed_root, out, "scales=[1.0]", "flip=true", "crf=none"), cam_model)
    first = np.load(out / "scores" / "img0.npy", allow_pickle=True).item()
    metrics = run(infer_cfg(mixed_root, out, "scales=[1.0]", "flip=true", "crf=none", "overwrite=true"), cam_model)
    assert json.loads((out / "settings.json").read_text())["flip"] is True
    redone = np.load(out / "scores" / "img0.npy", allow_pickle=True).item()
    assert any(not np.array_equal(first[k], redone[k]) for k in first)
    assert metrics["pred"]["mIoU"] == pytest.approx(json.loads((out / "metrics.json").read_text())["val/mIoU"])
    (out / "settings.json").unlink()  # outputs whose settings nobody recorded
    with pytest.raises(SettingsMismatch, match="no settings.json"):
        run(infer_cfg(mixed_root, out, "scales=[1.0]", "flip=true", "crf=none"), cam_model)


def test_multirun_gives_each_job_its_own_folder(tmp_path, mixed_root, cam_ckpt):
    """Bug 14: `-m ... out_dir=X flip=true,false` writes X/0 and X/1, each with its own settings and metrics."""
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "wsss.infer", "-m", f"ckpt={cam_ckpt}", f"dataset.root={mixed_root}",
           "dataset.packaged_lists=false", f"out_dir={out}", "loader_workers=0", "workers=1", "device=cpu",
           "progress=false", "scales=[1.0]", "crf=none", "flip=true,false"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    settings = [json.loads((out / str(n) / "settings.json").read_text()) for n in (0, 1)]
    assert [s["flip"] for s in settings] == [True, False]
    assert all(len(list((out / str(n) / "pred").glob("*.png"))) == len(SIZES) for n in (0, 1))
    assert all((out / str(n) / "infer.log").is_file() for n in (0, 1))
    assert not list(out.glob("scores")) and not (tmp_path / "multirun").exists()
    assert "job 1 writes to" in (out / "1" / "infer.log").read_text()


def test_checkpoint_classes_must_match_the_data(tmp_path, mixed_root, cam_model):
    """Bug 6: a 6-class checkpoint on a root that says 21 classes, or on a root without class_names.txt under
    the 21-class dataset=voc, stops with the file and the fix."""
    root = tmp_path / "VOC"
    shutil.copytree(mixed_root, root)
    (root / "class_names.txt").write_text("\n".join(["background"] + [f"c{i}" for i in range(20)]) + "\n")
    with pytest.raises(ValueError, match=r"class_names.txt lists 21 classes.*checkpoint \(6 classes\).*"
                                         r"dataset=synthetic"):
        run(infer_cfg(root, tmp_path / "o1"), cam_model)
    (root / "class_names.txt").unlink()
    with pytest.raises(ValueError, match=r"checkpoint has 6 classes.*dataset config has 21.*dataset=synthetic"):
        run(infer_cfg(root, tmp_path / "o2"), cam_model)
    assert not (tmp_path / "o2" / "scores").exists()  # refused before writing anything
    save_cls_labels_npy(root / "cls_labels.npy", {"img0": np.ones(20, np.float32)})
    from wsss.data.formats import DataFormatError

    with pytest.raises(DataFormatError, match=r"cls_labels.npy was made for another number of classes"):
        run(infer_cfg(root, tmp_path / "o3", "dataset=synthetic", "dataset.packaged_lists=false"), cam_model)


def test_bad_inputs_name_the_file(tmp_path, mixed_root, cam_model):
    cfg = infer_cfg(mixed_root, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="ckpt not found"):
        load_for_inference(cfg, tmp_path / "nope.ckpt", None)
    other = tmp_path / "weights.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not a wsss Lightning checkpoint.*method="):
        load_for_inference(cfg, other, None)
    spml_like = tmp_path / "model-3999.pth"
    torch.save({"embedding_model": {}, "prediction_model": {}}, spml_like)
    with pytest.raises(ValueError, match="looks like an SPML release: add method=spml"):
        load_for_inference(cfg, spml_like, None)
    broken = tmp_path / "VOC"
    (broken / "ImageSets/Segmentation").mkdir(parents=True)
    (broken / "JPEGImages").mkdir()
    (broken / "ImageSets/Segmentation/val.txt").write_text("missing_image\n")
    (broken / "class_names.txt").write_text("\n".join(NAMES) + "\n")
    with pytest.raises(FileNotFoundError, match="missing_image.jpg"):
        run(infer_cfg(broken, tmp_path / "o2"), cam_model)
    with pytest.raises(FileNotFoundError, match="split list 'nosuch'"):
        run(infer_cfg(mixed_root, tmp_path / "o3", "split=nosuch"), cam_model)
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match="out_dir"):
            run(infer_cfg(mixed_root, locked / "out"), cam_model)


def test_a_checkpoint_of_another_method_is_refused(tmp_path, synthetic_root):
    from wsss.engine import fit

    cfg = compose_train_cfg(tmp_path / "train", synthetic_root, ["debug=fast", "logger=none"])
    fit(cfg)
    with pytest.raises(ValueError, match="method 'cam', not 'rtc'"):
        load_for_inference(cfg, tmp_path / "train" / "checkpoints" / "last.ckpt", "rtc")


def test_densepose_layout_split_and_gt(tmp_path):
    """dataset=densepose: images under images/<split2014>/, GT in segcls/densepose/gray, labels derived from GT."""
    from wsss.data.densepose import PART_NAMES, write_synthetic_densepose

    root = write_synthetic_densepose(tmp_path / "dp", num_train=2, num_val=3, image_size=(48, 40))
    torch.manual_seed(0)
    model = CAMModule(backbone={"name": "tiny"}, num_classes=15, class_names=list(PART_NAMES),
                      bg={"rule": "threshold", "threshold": 0.3}).eval()
    cfg = infer_cfg(root, tmp_path / "out", "dataset=densepose", "split=minival2014", "scales=[1.0]", "flip=false")
    metrics = run(cfg, model)
    ids = sorted(p.stem for p in (tmp_path / "out" / "pred").glob("*.png"))
    assert len(ids) == 3 and "mIoU" in metrics["pred"]
    for image_id in ids:
        gt = read_label_png(root / "segcls" / "densepose" / "gray" / f"{image_id}.png")
        present = sorted(int(k) - 1 for k in np.unique(gt) if 0 < k < 15)
        assert sorted(load_score_dict(tmp_path / "out" / "scores" / f"{image_id}.npy")) == present


@pytest.mark.slow
def test_torchrun_shards_images_and_equals_one_process(tmp_path, mixed_root, cam_ckpt):
    """`torchrun --nproc_per_node=2 -m wsss.infer`: each rank its share, the same files as one process (scores to
    1e-5), and rank 0's metrics over every file equal one process's."""
    args = [f"ckpt={cam_ckpt}", f"dataset.root={mixed_root}", "dataset.packaged_lists=false", "split=val",
            "loader_workers=0", "workers=1", "device=cpu", "progress=false", "scales=[1.0,0.5]", "crf=seam"]
    one = subprocess.run([sys.executable, "-m", "wsss.infer", f"out_dir={tmp_path / 'one'}", *args], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29547",
                          "-m", "wsss.infer", f"out_dir={tmp_path / 'two'}", *args], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "rank 1 of 2" in two.stdout + two.stderr
    for kind in ("scores", "pred", "crf"):
        files = sorted(p.name for p in (tmp_path / "one" / kind).iterdir())
        assert files and files == sorted(p.name for p in (tmp_path / "two" / kind).iterdir()), kind
    for name in files:
        stem = name[:-4]
        a, b = (load_score_dict(tmp_path / d / "scores" / f"{stem}.npy") for d in ("one", "two"))
        assert sorted(a) == sorted(b) and all(np.abs(a[k] - b[k]).max() < 1e-5 for k in a)
        for kind in ("pred", "crf"):
            assert np.array_equal(read_label_png(tmp_path / "one" / kind / name),
                                  read_label_png(tmp_path / "two" / kind / name))
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert m1["val/mIoU"] == m2["val/mIoU"] and m1["val/crf/mIoU"] == m2["val/crf/mIoU"]
    assert json.loads((tmp_path / "two" / "run.json").read_text())["details"]["ranks"] == 2
