"""RTC's official checkpoint: key layout import, wrong files refused, inference parity with the reference.

Fixtures and how they were made: tests/fixtures/rtc/README.md.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsss.checkpoints import rtc as rtc_ckpt
from wsss.methods.rtc import RTCModule

FIX = Path(__file__).parent / "fixtures" / "rtc"
VOC_FEATURES = {"low": "conv3", "mid": "conv4", "high": "conv5", "final": "conv6"}


def _seeded_state_module():
    spec = importlib.util.spec_from_file_location("rtc_seeded_state", FIX / "seeded_state.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def official_spec():
    return [(e["name"], e["shape"], e["dtype"]) for e in json.loads((FIX / "keys.json").read_text())]


def official_state(seed: int):
    ref = np.load(FIX / "reference_cam.npz")
    aff = {k.replace("__", "."): torch.from_numpy(ref[k]) for k in ref.files if k.startswith("_aff")}
    return _seeded_state_module().seeded_state_dict(official_spec(), seed, aff)


def voc_rtc(**kw) -> RTCModule:
    return RTCModule(backbone={"name": "resnet38d"}, num_classes=21, features=VOC_FEATURES,
                     bg={"rule": "threshold", "threshold": 0.17}, **kw)


@pytest.fixture(scope="module")
def imported():
    torch.manual_seed(0)
    model = voc_rtc()
    seed = int(np.load(FIX / "reference_cam.npz")["seed"])
    rtc_ckpt.load_official_state(model, official_state(seed), source="seeded fixture")
    return model.eval()


def test_keys_fixture_is_the_release_layout():
    spec = official_spec()
    assert len(spec) == 248
    assert sum(d == "int64" for _, _, d in spec) == 37
    assert sorted(n for n, _, _ in spec if n.startswith("_aff.")) == sorted(k for k in rtc_ckpt.DROPPED if "_aff" in k)


def test_every_official_key_lands_in_the_model(imported):
    """Strict: each wsss tensor equals the official tensor it was mapped from."""
    state = official_state(0)
    converted = rtc_ckpt.convert_official(state)
    ours = imported.state_dict()
    assert set(converted) == {k for k in ours if k.startswith(("backbone.", "head."))}
    assert len(converted) == 248 - len(rtc_ckpt.DROPPED)
    for key in ("backbone.b4_5.conv_branch2b1.weight", "head.seg_classifier.weight", "head.fcm_shallow.weight",
                "backbone.bn7.running_var"):
        assert torch.equal(ours[key], converted[key])


def test_release_file_round_trip_with_module_prefix(tmp_path, imported):
    """The release as saved (plain dict); a ``module.``-prefixed copy loads too."""
    state = {"module." + k: v for k, v in official_state(1).items()}
    path = tmp_path / "rtc_contrast_best.pth"
    torch.save(state, path)
    model = voc_rtc()
    assert rtc_ckpt.load_official_into(model, path) == path
    assert torch.equal(model.head.cam_classifier.weight, state["module.classifier1.weight"])
    started = voc_rtc(weights=str(path))  # method.weights=...: start training from the release
    assert torch.equal(started.backbone.b7.conv_branch2b2.weight, state["module.b7.conv_branch2b2.weight"])
    assert "weights" not in started.hparams


def test_shape_mismatch_is_explained():
    state = official_state(0)
    model = RTCModule(backbone={"name": "resnet38d"}, num_classes=6, features=VOC_FEATURES)
    with pytest.raises(ValueError, match="num_classes=21"):
        rtc_ckpt.load_official_state(model, state)


@pytest.mark.parametrize("obj, says", [
    ({"embedding_model": {"a": torch.zeros(1)}, "prediction_model": {}}, "SPML"),
    ({"conv1a.weight": torch.zeros(64, 3, 3, 3), "b2.conv_branch1.weight": torch.zeros(1), "bn7.weight": torch.zeros(1)},
     "plain resnet38d"),
    ({"state_dict": {}, "pytorch-lightning_version": "2.4", "wsss": {"method": "cam"}}, "method 'cam'"),
    ({"conv1a.weight": torch.zeros(1), "b2.bn_branch2a.weight": torch.zeros(1), "fc8.weight": torch.zeros(1),
      "f8_3.weight": torch.zeros(1), "f9.weight": torch.zeros(1)}, "SEAM"),
])
def test_wrong_method_checkpoint_is_refused(tmp_path, obj, says):
    path = tmp_path / "other.pth"
    torch.save(obj, path)
    with pytest.raises(ValueError, match=says):
        rtc_ckpt.load_official_into(voc_rtc(), path)


def test_mxnet_params_is_refused(tmp_path):
    path = tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001.params"
    path.write_bytes(b"\x12\x01\x00\x00\x00\x00\x00\x00")
    with pytest.raises(ValueError, match="backbone.weights"):
        rtc_ckpt.read_official(path)


def shared_inference(model: RTCModule, image: Image.Image, scales=(0.5, 1.0, 1.5, 2.0)) -> np.ndarray:
    """wsss's shared multi-scale + flip inference (what ``python -m wsss.infer`` runs) with RTC's recipe:
    PIL bicubic to (round(W*s), round(H*s)), ImageNet mean/std, + flip, mean of the 8 resized raw maps."""
    from wsss.inference.data import image_pyramid
    from wsss.inference.multiscale import aggregate_raw_scores

    arr = np.asarray(image)
    inputs = [x[None] for x in image_pyramid(arr, scales, "pil_bicubic")]
    raw = aggregate_raw_scores(model, inputs, arr.shape[:2], flip=True, aggregation=model.score_aggregation)
    return raw[0].numpy()


@pytest.fixture(scope="module")
def ours_cams(imported):
    return shared_inference(imported, Image.open(FIX / "image.png").convert("RGB"))


def test_parity_with_reference_contrast_infer(imported, ours_cams):
    assert imported.score_aggregation == "mean"
    ours = ours_cams
    ref = np.load(FIX / "reference_cam.npz")["cams"]
    assert ours.shape == ref.shape == (20, 31, 41)
    assert np.abs(ours - ref).max() < 1e-4
    # the reference's cam_pred PNG: argmax with a constant 0.17 background
    scores = imported.finalize_scores(torch.from_numpy(ours)[None])[0].numpy()
    pred = scores.argmax(0)
    assert (pred == np.asarray(Image.open(FIX / "reference_cam_pred.png"))).mean() > 0.999


def test_crf_preset_rtc_reproduces_the_reference_crf_png(ours_cams):
    """`crf=rtc` on wsss's scores of the imported model gives the reference's --out_crf PNG."""
    from wsss.postprocess.crf import load_preset, refine

    image = np.asarray(Image.open(FIX / "image.png").convert("RGB"))
    labels = refine(image, ours_cams, list(range(20)), load_preset("rtc"), num_classes=21)
    assert np.array_equal(labels, np.asarray(Image.open(FIX / "reference_crf.png")))


def test_infer_cli_with_the_release_file_writes_the_reference_outputs(tmp_path):
    """`python -m wsss.infer method=rtc ckpt=rtc_contrast_best.pth ...` on a VOC-layout folder: the CAM dict,
    CAM PNG and CRF PNG equal what the unchanged reference contrast_infer.py wrote for the same weights."""
    import subprocess
    import sys

    seed = int(np.load(FIX / "reference_cam.npz")["seed"])
    ckpt = tmp_path / "rtc_contrast_best.pth"
    torch.save(official_state(seed), ckpt)
    root = tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "JPEGImages" / "2007_000032.jpg").write_bytes((FIX / "image.png").read_bytes())
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000032\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "wsss.infer", "method=rtc", f"ckpt={ckpt}", f"dataset.root={root}",
                           "split=val", f"out_dir={out}", f"hydra.run.dir={tmp_path / 'run'}", "workers=1",
                           "loader_workers=0", "device=cpu"],
                          cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cams = np.load(out / "scores" / "2007_000032.npy", allow_pickle=True).item()
    ref = np.load(FIX / "reference_cam.npz")["cams"]
    assert sorted(cams) == list(range(20))  # the reference saves every class
    assert np.abs(np.stack([cams[k] for k in range(20)]) - ref).max() < 1e-4
    pred = np.asarray(Image.open(out / "pred" / "2007_000032.png"))
    assert (pred == np.asarray(Image.open(FIX / "reference_cam_pred.png"))).mean() > 0.999
    assert np.array_equal(np.asarray(Image.open(out / "crf" / "2007_000032.png")),
                          np.asarray(Image.open(FIX / "reference_crf.png")))
