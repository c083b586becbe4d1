"""wsss.predict: any folder of images, any format, EXIF orientation, corrupt files named, labels from the model."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import python_exe
from wsss.data.formats import load_score_dict
from wsss.methods.cam import CAMModule
from wsss.prediction.images import UnreadableImage, find_images, output_names, read_any_image

NAMES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle"]


def photo(h=20, w=30, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size=(h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A user's folder: mixed formats and cases, sub-folders, EXIF rotation, same stems, a corrupt file."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub" / "deeper").mkdir(parents=True)
    rgb = Image.fromarray(photo())
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    rgb.save(root / "sub" / "rotated.jpg", exif=exif)
    rgb.save(root / "x.jpg")
    rgb.save(root / "x.png")
    rgb.save(root / "UPPER.JPEG")
    rgb.save(root / "b.bmp")
    rgb.save(root / "c.webp")
    rgb.save(root / "sub" / "deeper" / "d.tif")
    Image.fromarray(photo()[..., 0]).save(root / "gray.png")
    rgb.convert("P").save(root / "palette.png")
    rgb.convert("RGBA").save(root / "rgba.png")
    rgb.convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(np.full((20, 30), 40000, np.uint16)).save(root / "deep.png")
    (root / "broken.jpg").write_bytes((root / "x.jpg").read_bytes()[:200])
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def cam_ckpt(tmp_path_factory) -> Path:
    import pytorch_lightning as pl

    torch.manual_seed(0)
    model = CAMModule(backbone={"name": "tiny"}, num_classes=6, class_names=NAMES,
                      bg={"rule": "threshold", "threshold": 0.3})
    path = tmp_path_factory.mktemp("ckpt") / "cam.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": pl.__version__,
                "wsss": {"method": "cam", "target": "wsss.methods.cam.CAMModule"}}, path)
    return path


def test_files_and_output_names(folder):
    files = find_images(folder)
    assert folder / "notes.txt" not in files and folder / "UPPER.JPEG" in files and len(files) == 13
    names = output_names(folder, files)
    assert names[folder / "x.jpg"] == "x.jpg" and names[folder / "x.png"] == "x.png"  # same stem: keep extension
    assert names[folder / "sub" / "deeper" / "d.tif"] == "sub/deeper/d"
    assert names[folder / "UPPER.JPEG"] == "UPPER"


def test_every_mode_becomes_rgb_and_corrupt_files_are_refused(folder):
    assert read_any_image(folder / "sub" / "rotated.jpg").shape == (30, 20, 3)  # EXIF applied
    for name in ("gray.png", "palette.png", "rgba.png", "cmyk.jpg", "c.webp", "sub/deeper/d.tif"):
        image = read_any_image(folder / name)
        assert image.shape == (20, 30, 3) and image.dtype == np.uint8, name
    deep = read_any_image(folder / "deep.png")
    assert int(deep[0, 0, 0]) == round(40000 * 255 / 65535)  # scaled to 8 bits, not clipped to 255
    with pytest.raises(UnreadableImage):
        read_any_image(folder / "broken.jpg")


def run_cli(ckpt, folder, out, *extra):
    return subprocess.run([python_exe(), "-m", "wsss.predict", f"ckpt={ckpt}", f"input={folder}", f"out_dir={out}",
                           "device=cpu", "progress=false", "workers=0", *extra],
                          capture_output=True, text=True, timeout=300)


def test_cli_writes_mirrored_outputs_lists_bad_files_and_resumes(tmp_path, folder, cam_ckpt):
    out = tmp_path / "out"
    first = run_cli(cam_ckpt, folder, out, "save_scores=true")
    assert first.returncode == 2, first.stderr[-2000:]
    assert "1 files could not be read and were skipped" in first.stdout and "broken.jpg" in first.stdout
    for rel, size in [("sub/rotated", (20, 30)), ("x.jpg", (30, 20)), ("x.png", (30, 20)), ("UPPER", (30, 20)),
                      ("sub/deeper/d", (30, 20)), ("deep", (30, 20)), ("cmyk", (30, 20))]:
        pred = Image.open(out / "pred" / f"{rel}.png")
        assert pred.mode == "P" and pred.size == size, rel  # the image's size after EXIF orientation
        assert (out / "overlay" / f"{rel}.jpg").is_file(), rel
        scores = load_score_dict(out / "scores" / f"{rel}.npy")
        assert all(v.shape == (size[1], size[0]) for v in scores.values()), rel
    assert not (out / "pred" / "broken.png").exists()
    run = json.loads((out / "run.json").read_text())  # what was scored, and how
    assert run["tool"] == "predict" and run["status"] == "done" and run["details"]["checkpoint"]["path"] == str(cam_ckpt)
    assert run["details"]["labels_restrict_prediction"] is False and run["details"]["image_labels_from_classifier"]
    assert list(run["details"]["unreadable"]) == [str(folder / "broken.jpg")]
    again = run_cli(cam_ckpt, folder, out, "save_scores=true")
    assert again.returncode == 2 and "predicted 0 images (12 done before)" in again.stdout
    other = run_cli(cam_ckpt, folder, out)
    assert other.returncode == 1 and "settings.json" in other.stderr  # other settings: refused, both named


def test_labels_come_from_the_models_classifier(tmp_path, folder, cam_ckpt, monkeypatch):
    from omegaconf import OmegaConf

    from wsss.engine import load_method_checkpoint
    from wsss.prediction.tool import run

    model = load_method_checkpoint(cam_ckpt)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.weight[2] = 1.0  # bird everywhere: every image's CAM is "bird"
    probs = torch.tensor([[0.1, 0.2, 0.9, 0.1, 0.3]])
    monkeypatch.setattr(model, "image_label_probs", lambda image: probs.expand(image.shape[0], -1))
    cfg = OmegaConf.create({"ckpt": str(cam_ckpt), "input": str(folder / "x.png"), "out_dir": str(tmp_path / "o"),
                            "save_scores": True, "cls_threshold": 0.5, "scales": None, "flip": None,
                            "resize": None, "classes": None, "pred_with_labels": None, "crf": {"name": "none"},
                            "workers": 0, "device": "cpu", "precision": 32, "overwrite": False, "progress": False})
    run(cfg, model)
    scores = load_score_dict(tmp_path / "o" / "scores" / "x.npy")
    assert sorted(scores) == [2]  # only the class the classifier put in the image
    monkeypatch.setattr(model, "image_label_probs", lambda image: torch.full((image.shape[0], 5), 0.1))
    cfg.out_dir, cfg.overwrite = str(tmp_path / "p"), True
    run(cfg, model)
    assert len(load_score_dict(tmp_path / "p" / "scores" / "x.npy")) == 1  # none passed: the likeliest is kept


@pytest.mark.slow
def test_torchrun_shards_the_folder_and_equals_one_process(tmp_path, folder, cam_ckpt):
    one = run_cli(cam_ckpt, folder, tmp_path / "one")
    two = subprocess.run([python_exe(), "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29559",
                          "-m", "wsss.predict", f"ckpt={cam_ckpt}", f"input={folder}", f"out_dir={tmp_path / 'two'}",
                          "device=cpu", "progress=false", "workers=0"], capture_output=True, text=True, timeout=600)
    assert one.returncode == 2 and two.returncode != 0  # the corrupt file: every rank exits 2
    assert "1 files could not be read" in two.stdout and "broken.jpg" in two.stdout
    preds = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "pred").rglob("*.png"))
    assert preds == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two" / "pred").rglob("*.png"))
    for rel in preds:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "one" / rel)), np.asarray(Image.open(tmp_path / "two" / rel)))
    assert json.loads((tmp_path / "two" / "run.json").read_text())["details"]["ranks"] == 2
