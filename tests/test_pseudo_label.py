"""``wsss.pseudo_label`` on the synthetic set: outputs, metrics, resume and its settings record, class checks,
errors, multirun, W&B."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image
from scipy.ndimage import gaussian_filter

from wsss.data.formats import DataFormatError, read_image, read_label_png, read_split_list, save_score_dict
from wsss.outputs import SettingsMismatch
from wsss.postprocess.crf import Background, load_preset, refine
from wsss.pseudo_label import run

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 6


def _ids(root: Path, split: str):
    return read_split_list(root / "ImageSets" / "Segmentation" / f"{split}.txt")


@pytest.fixture(scope="module")
def scores_dir(tmp_path_factory, synthetic_root):
    """Blurred, noisy GT as CAM-like score dicts (present classes only), for train and val."""
    out = tmp_path_factory.mktemp("scores")
    rng = np.random.default_rng(0)
    for i in _ids(synthetic_root, "train") + _ids(synthetic_root, "val"):
        gt = read_label_png(synthetic_root / "SegmentationClassAug" / f"{i}.png")
        scores = {}
        for c in np.unique(gt):
            if c in (0, 255):
                continue
            m = gaussian_filter((gt == c).astype(np.float32), 2.5) * 0.9 + rng.uniform(0, 0.35, gt.shape)
            scores[int(c) - 1] = np.clip(m, 0, 1).astype(np.float32)
        save_score_dict(out / f"{i}.npy", scores)
    return out


def _cfg(tmp_path, root, scores, *overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="pseudo_label", overrides=[
            f"scores_dir={scores}", f"dataset.root={root}", "dataset.synthetic=null", "progress=false",
            "workers=0", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


def _seam_miou(conf):
    conf = np.asarray(conf, np.float64)
    tp = np.diag(conf)
    return float(np.mean(tp / (conf.sum(0) + conf.sum(1) - tp + 1e-10)))


def test_none_is_thresholded_argmax_and_reports_miou(tmp_path, synthetic_root, scores_dir):
    res = run(_cfg(tmp_path, synthetic_root, scores_dir, "split=train", "crf=none", "bg.threshold=0.3"))
    out = tmp_path / "run"
    ids = _ids(synthetic_root, "train")
    assert res["written"] == len(ids) and res["num_scored"] == len(ids)
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for i in ids:
        png = Image.open(out / f"{i}.png")
        assert png.mode == "P"
        d = np.load(scores_dir / f"{i}.npy", allow_pickle=True).item()
        keys = sorted(d)
        stack = np.stack([np.full(d[keys[0]].shape, 0.3, np.float32)] + [d[k] for k in keys])
        expected = np.array([0] + [k + 1 for k in keys])[np.argmax(stack, 0)]
        np.testing.assert_array_equal(np.asarray(png), expected)
        gt = np.asarray(Image.open(synthetic_root / "SegmentationClass" / f"{i}.png"))
        keep = gt != 255
        conf += np.bincount(gt[keep].astype(int) * NUM_CLASSES + expected[keep],
                            minlength=NUM_CLASSES ** 2).reshape(NUM_CLASSES, NUM_CLASSES)
    assert res["mIoU_seam"] == pytest.approx(_seam_miou(conf), abs=1e-12)
    saved = json.loads((out / "metrics.json").read_text())  # fractions, named by the split scored
    assert saved["train/mIoU_seam"] == pytest.approx(res["mIoU_seam"]) and saved["protocol"]["crf"] == "none"
    assert saved["train/mIoU"] == pytest.approx(res["mIoU"]) and saved["tool"] == "pseudo_label"
    assert saved["protocol"]["background"] == {"rule": "threshold", "threshold": 0.3, "alpha": None,
                                               "chosen": "fixed", "source": "bg"}
    assert json.loads((out / "settings.json").read_text())["background"]["threshold"] == 0.3
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_crf_preset_in_worker_pool(tmp_path, synthetic_root, scores_dir):
    res = run(_cfg(tmp_path, synthetic_root, scores_dir, "split=val", "crf=rtc", "workers=2",
                   "bg.threshold=0.9"))
    assert res["background"]["source"] == "crf preset 'rtc'"  # the preset's 0.17 wins over bg.threshold
    out = tmp_path / "run"
    preset, differs = load_preset("rtc"), 0
    for i in _ids(synthetic_root, "val")[:4]:
        d = np.load(scores_dir / f"{i}.npy", allow_pickle=True).item()
        keys = sorted(d)
        image = read_image(synthetic_root / "JPEGImages" / f"{i}.jpg")
        expected = refine(image, np.stack([d[k] for k in keys]), keys, preset, num_classes=NUM_CLASSES)
        got = read_label_png(out / f"{i}.png")
        np.testing.assert_array_equal(got, expected)
        plain = refine(image, np.stack([d[k] for k in keys]), keys, load_preset("none"),
                       bg=Background("threshold", 0.17))
        differs += int((plain != got).any())
    assert differs  # the CRF changed the noisy maps


def test_resume_keeps_existing_and_overwrite_redoes(tmp_path, synthetic_root, scores_dir):
    args = (tmp_path, synthetic_root, scores_dir, "split=val", "crf=none")
    first = run(_cfg(*args))
    out = tmp_path / "run"
    ids = _ids(synthetic_root, "val")
    original = read_label_png(out / f"{ids[0]}.png")
    Image.fromarray(np.zeros_like(original)).save(out / f"{ids[0]}.png")  # a "stale" label
    second = read_label_png(out / f"{ids[1]}.png")
    (out / f"{ids[1]}.png").unlink()  # as if killed before this one
    again = run(_cfg(*args))
    assert (again["written"], again["kept"]) == (1, len(ids) - 1)
    assert (read_label_png(out / f"{ids[0]}.png") == 0).all()  # kept as it was
    np.testing.assert_array_equal(read_label_png(out / f"{ids[1]}.png"), second)
    assert again["mIoU_seam"] != pytest.approx(first["mIoU_seam"])  # the metrics read the kept (stale) file
    redo = run(_cfg(*args, "overwrite=true"))
    assert redo["written"] == len(ids)
    np.testing.assert_array_equal(read_label_png(out / f"{ids[0]}.png"), original)
    assert redo["mIoU_seam"] == pytest.approx(first["mIoU_seam"])


def test_without_gt_writes_labels_and_no_miou(tmp_path, synthetic_root, scores_dir):
    res = run(_cfg(tmp_path, synthetic_root, scores_dir, "split=val", f"gt_dir={tmp_path / 'nowhere'}"))
    assert res["num_scored"] == 0 and "mIoU" not in res
    assert len(list((tmp_path / "run").glob("*.png"))) == len(_ids(synthetic_root, "val"))


def test_bad_inputs_name_the_file(tmp_path, synthetic_root, scores_dir):
    ids = _ids(synthetic_root, "val")
    broken = tmp_path / "scores"
    shutil.copytree(scores_dir, broken)
    (broken / f"{ids[2]}.npy").unlink()
    with pytest.raises(FileNotFoundError, match=f"{ids[2]}.npy"):
        run(_cfg(tmp_path, synthetic_root, broken, "split=val"))
    shutil.copy(scores_dir / f"{ids[2]}.npy", broken / f"{ids[2]}.npy")
    np.save(broken / f"{ids[3]}.npy", np.zeros((5, 64, 64), np.float32))
    with pytest.raises(ValueError, match=f"{ids[3]}.npy.*expected a dict"):
        run(_cfg(tmp_path, synthetic_root, broken, "split=val"))
    save_score_dict(broken / f"{ids[3]}.npy", {0: np.zeros((32, 64), np.float32)})
    with pytest.raises(ValueError, match=f"{ids[3]}.npy.*32x64"):
        run(_cfg(tmp_path, synthetic_root, broken, "split=val", "overwrite=true"))
    with pytest.raises(FileNotFoundError, match="split list 'nope' not found"):
        run(_cfg(tmp_path, synthetic_root, scores_dir, "split=nope"))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="cannot be written"):
        run(_cfg(tmp_path, synthetic_root, scores_dir, "split=val", f"out_dir={blocker / 'sub'}"))
    with pytest.raises(FileNotFoundError, match="scores_dir"):
        run(_cfg(tmp_path, synthetic_root, tmp_path / "missing", "split=val"))
    with pytest.raises(ValueError, match="learned"):
        run(_cfg(tmp_path, synthetic_root, scores_dir, "split=val", "bg.rule=learned"))


def test_multirun_with_out_dir_gives_each_run_its_own_folder(tmp_path, synthetic_root, scores_dir):
    """Bug 14: `-m ... out_dir=PL bg.threshold=0.3,0.7` used to write both runs into PL, and the second kept the
    first's PNGs and reported the same mIoU. Now run N writes PL/N (and says so in its log)."""
    sweep = tmp_path / "PL"
    cmd = [sys.executable, "-m", "wsss.pseudo_label", "-m", f"scores_dir={scores_dir}", f"out_dir={sweep}",
           f"dataset.root={synthetic_root}", "dataset.synthetic=null", "split=val", "workers=0", "progress=false",
           "crf=none", "bg.threshold=0.3,0.7"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads((sweep / str(n) / "metrics.json").read_text()) for n in (0, 1)]
    assert [r["protocol"]["background"]["threshold"] for r in runs] == [0.3, 0.7]
    assert [r["inputs"]["out_dir"] for r in runs] == [str(sweep / str(n)) for n in (0, 1)]
    assert runs[0]["val/mIoU"] != pytest.approx(runs[1]["val/mIoU"])
    assert [ln for ln in proc.stdout.splitlines() if re.fullmatch(r"val/mIoU=\d\.\d{4}", ln)] == [
        f"val/mIoU={r['val/mIoU']:.4f}" for r in runs]  # each run's last line
    for n in (0, 1):
        assert len(list((sweep / str(n)).glob("*.png"))) == len(_ids(synthetic_root, "val"))
        assert json.loads((sweep / str(n) / "settings.json").read_text())["background"]["threshold"] == [0.3, 0.7][n]
        assert f"job {n} writes to {sweep / str(n)}" in (sweep / str(n) / "pseudo_label.log").read_text()
    assert not list(sweep.glob("*.png")) and not (tmp_path / "multirun").exists()


def test_resume_refuses_labels_of_other_settings(tmp_path, synthetic_root, scores_dir):
    """Bug 14: a rerun into the same out_dir with another threshold stops instead of keeping the old PNGs."""
    out = tmp_path / "PL"
    args = (tmp_path, synthetic_root, scores_dir, "split=val", "crf=none", f"out_dir={out}")
    first = run(_cfg(*args, "bg.threshold=0.3"))
    with pytest.raises(SettingsMismatch, match=r"background.threshold: 0.3 there, 0.7 now.*overwrite=true.*"
                                               r"another out_dir"):
        run(_cfg(*args, "bg.threshold=0.7"))
    with pytest.raises(SettingsMismatch, match=r"holds outputs made with other settings .*settings.json\): "
                                               r"crf.name: \"none\" there, \"rtc\" now"):
        run(_cfg(tmp_path, synthetic_root, scores_dir, "split=val", "crf=rtc", f"out_dir={out}"))
    again = run(_cfg(*args, "bg.threshold=0.3"))  # same settings: resumes, keeps every PNG
    assert (again["written"], again["kept"]) == (0, first["written"])
    redo = run(_cfg(*args, "bg.threshold=0.7", "overwrite=true"))
    assert redo["written"] == first["written"] and redo["mIoU"] != pytest.approx(first["mIoU"])
    assert json.loads((out / "settings.json").read_text())["background"]["threshold"] == 0.7


def test_classes_of_another_data_set_are_refused(tmp_path, synthetic_root, scores_dir):
    """Bug 6: `dataset=voc` (21 classes) on the 6-class synthetic set used to run without a word."""
    with pytest.raises(ValueError, match=r"class_names.txt lists 6 classes.*config .*has 21.*dataset=synthetic"):
        run(_cfg(tmp_path, synthetic_root, scores_dir, "split=val", "dataset=voc"))
    root = tmp_path / "copy"  # the same set without class_names.txt: its cls_labels.npy (5-d) gives it away
    shutil.copytree(synthetic_root, root)
    (root / "class_names.txt").unlink()
    with pytest.raises(DataFormatError, match=r"cls_labels.npy was made for another number of classes.*dataset=voc"):
        run(_cfg(tmp_path, root, scores_dir, "split=val", "dataset=voc"))
    (root / "cls_labels.npy").unlink()  # nothing left in the root: the GT's and the scores' class indices
    three = ("dataset.num_classes=3", "dataset.class_names=[background,aeroplane,bicycle]")
    with pytest.raises(ValueError, match=r"png: class ids \[\d\] outside 0..2.*GT was made for more classes.*"
                                         r"dataset.num_classes"):
        run(_cfg(tmp_path, root, scores_dir, "split=val", *three))
    with pytest.raises(ValueError, match=r"npy: class index \d+ but the config has 3 classes.*dataset.num_classes"):
        run(_cfg(tmp_path, root, scores_dir, "split=val", *three, f"gt_dir={tmp_path / 'no_gt'}",
                 f"out_dir={tmp_path / 'o2'}"))


def test_wandb_offline_logs_table_and_overlays(tmp_path, synthetic_root, scores_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run(_cfg(tmp_path, synthetic_root, scores_dir, "split=val", "logger=wandb", "overlay_count=3"))
    media = list((tmp_path / "run" / "wandb").glob("offline-run-*/files/media"))
    assert media, "no offline W&B run written"
    assert list(media[0].glob("images/val/overlays_*.png"))
    assert list(media[0].glob("table/val/per_class_*.table.json"))


def test_compact_scores_give_the_same_labels(tmp_path, synthetic_root, scores_dir):
    """npz16 score files (wsss.infer scores_format=npz16) label like the .npy dicts they came from."""
    from wsss.data.formats import load_score_dict, save_score_dict

    compact = tmp_path / "npz"
    for path in sorted(scores_dir.glob("*.npy")):
        save_score_dict(compact / path.name, load_score_dict(path), "npz16")
    a = run(_cfg(tmp_path / "a", synthetic_root, scores_dir, "split=val", f"out_dir={tmp_path / 'A'}"))
    b = run(_cfg(tmp_path / "b", synthetic_root, compact, "split=val", f"out_dir={tmp_path / 'B'}"))
    assert abs(a["mIoU"] - b["mIoU"]) < 1e-3
    same = [np.mean(read_label_png(tmp_path / "A" / f"{i}.png") == read_label_png(tmp_path / "B" / f"{i}.png"))
            for i in _ids(synthetic_root, "val")]
    assert min(same) > 0.99


@pytest.mark.slow
def test_torchrun_shards_the_labels_and_equals_one_process(tmp_path, synthetic_root, scores_dir):
    args = [f"scores_dir={scores_dir}", f"dataset.root={synthetic_root}", "dataset.synthetic=null", "split=val",
            "progress=false", "workers=0", "crf=seam"]
    one = subprocess.run([sys.executable, "-m", "wsss.pseudo_label", f"out_dir={tmp_path / 'one'}", *args],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29553",
                          "-m", "wsss.pseudo_label", f"out_dir={tmp_path / 'two'}", *args], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    ids = _ids(synthetic_root, "val")
    for i in ids:
        assert np.array_equal(read_label_png(tmp_path / "one" / f"{i}.png"), read_label_png(tmp_path / "two" / f"{i}.png"))
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert m1["val/mIoU"] == m2["val/mIoU"] and m1["details"]["confusion"] == m2["details"]["confusion"]


def test_fused_labels_equal_infer_then_pseudo_label_and_write_no_scores(tmp_path, synthetic_root):
    """pseudo_label ckpt=CKPT (fused) gives the labels and metrics of wsss.infer followed by pseudo_label
    scores_dir=..., and writes no score map."""
    import pytorch_lightning as pl
    import torch

    from wsss.methods.cam import CAMModule

    torch.manual_seed(0)
    names = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle"]
    model = CAMModule(backbone={"name": "tiny"}, num_classes=6, class_names=names)
    ckpt = tmp_path / "cam.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": pl.__version__,
                "wsss": {"method": "cam", "target": "wsss.methods.cam.CAMModule"}}, ckpt)
    common = [f"dataset.root={synthetic_root}", "split=val", "progress=false", "device=cpu", "loader_workers=0",
              "scales=[1.0,0.5]", "flip=true"]
    label = ["dataset.synthetic=null", "crf=seam", "bg.threshold=0.3", "workers=0"]

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]

    cli("wsss.infer", f"ckpt={ckpt}", f"out_dir={tmp_path / 'scores'}", "crf=none", "workers=0", *common)
    cli("wsss.pseudo_label", f"scores_dir={tmp_path / 'scores' / 'scores'}", f"out_dir={tmp_path / 'two_step'}",
        f"dataset.root={synthetic_root}", "split=val", "progress=false", *label)
    cli("wsss.pseudo_label", f"ckpt={ckpt}", f"out_dir={tmp_path / 'fused'}", *common, *label)
    for i in _ids(synthetic_root, "val"):
        assert np.array_equal(read_label_png(tmp_path / "two_step" / f"{i}.png"),
                              read_label_png(tmp_path / "fused" / f"{i}.png")), i
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("two_step", "fused"))
    assert m1["val/mIoU"] == m2["val/mIoU"]
    assert not list((tmp_path / "fused").rglob("*.npy")) and not list((tmp_path / "fused").rglob("*.npz"))
