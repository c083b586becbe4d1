"""HSC's released checkpoint (and EPS's): the 242-key layout loads strictly, other methods' files are refused by name,
and `python -m wsss.infer method=hsc ckpt=...` writes what the reference inference.py writes.

Fixtures and how they were made: tests/fixtures/hsc/README.md.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsss.checkpoints import hsc as hsc_ckpt
from wsss.methods.eps import EPSModule
from wsss.methods.hsc import HSCModule

FIX = Path(__file__).parent / "fixtures" / "hsc"
RTC_FIX = Path(__file__).parent / "fixtures" / "rtc"
IMAGES = ("2007_000032", "2007_000648")


def _seeded_state_module():
    spec = importlib.util.spec_from_file_location("rtc_seeded_state", RTC_FIX / "seeded_state.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def official_spec(fix: Path = FIX):
    return [(e["name"], e["shape"], e["dtype"]) for e in json.loads((fix / "keys.json").read_text())]


def official_state(seed: int = 0):
    return _seeded_state_module().seeded_state_dict(official_spec(), seed)


def voc(cls, **kw):
    return cls(backbone={"name": "resnet38d"}, num_classes=21, **kw)


def test_keys_fixture_is_the_release_layout():
    spec = official_spec()
    assert len(spec) == 242 and sum(d == "int64" for _, _, d in spec) == 38
    assert dict((n, s) for n, s, _ in spec)["fc8.weight"] == [21, 4096, 1, 1]


@pytest.fixture(scope="module")
def state():
    return official_state(int(np.load(FIX / "reference_scores.npz")["seed"]))


@pytest.fixture(scope="module")
def imported(state):
    model = voc(HSCModule)
    hsc_ckpt.load_official_state(model, state, "hsc", source="seeded fixture")
    return model


def test_release_loads_strictly_and_every_key_lands(state, imported):
    ours = imported.state_dict()
    converted = hsc_ckpt.convert_official(state, hsc_ckpt.HSC_HEADS)
    assert len(converted) == 242
    for key, value in converted.items():
        assert torch.equal(ours[key], value), key
    # a DataParallel prefix is stripped
    hsc_ckpt.load_official_state(imported, {"module." + k: v for k, v in state.items()}, "hsc")


def test_other_files_are_refused_by_name(state, imported, tmp_path):
    eps = {k: v for k, v in state.items() if k.split(".")[0] in hsc_ckpt.BACKBONE_ROOTS + ("fc8",)}
    with pytest.raises(ValueError, match="EPS release.*method=eps"):
        hsc_ckpt.load_official_state(imported, eps, "hsc")
    with pytest.raises(ValueError, match="HSC release.*method=hsc"):
        hsc_ckpt.load_official_state(imported, state, "eps")
    rtc = {n: torch.zeros(1) for n, _, _ in official_spec(RTC_FIX)}
    with pytest.raises(ValueError, match="RTC release.*method=rtc"):
        hsc_ckpt.load_official_state(imported, rtc, "hsc")
    with pytest.raises(ValueError, match="num_classes=21"):
        hsc_ckpt.load_official_state(HSCModule(backbone={"name": "resnet38d"}, num_classes=6), state, "hsc")
    params = tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001.params"
    params.write_bytes(b"\x12\x01")
    with pytest.raises(ValueError, match="backbone.weights"):
        hsc_ckpt.load_official_into(imported, params)
    with pytest.raises(FileNotFoundError, match="HSC_eps_v2.pth"):
        hsc_ckpt.load_official_into(imported, tmp_path / "missing.pth")


def test_training_forward_matches_the_reference_network(imported):
    """CAM, PCM-refined CAM (cam_rv), their GAPs and both projections equal the reference Net.forward's
    (reference_forward.npz, seeded weights, eval mode) on a 2 x 3 x 56 x 72 input."""
    ref = np.load(FIX / "reference_forward.npz")
    imported.eval()
    with torch.no_grad():
        out = imported(torch.from_numpy(ref["input"]))
    for ours, theirs in (("pred", "pred"), ("cam", "cam"), ("pred_rv", "pred_rv"), ("cam_rv", "cam_rv"),
                         ("pixel_feat", "f_map_1"), ("region_feat", "f_map_2")):
        np.testing.assert_allclose(out[ours].numpy(), ref[theirs], atol=2e-5, rtol=1e-4, err_msg=ours)


def test_eps_release_loads_into_eps(state):
    eps = {k: v for k, v in state.items() if k.split(".")[0] in hsc_ckpt.BACKBONE_ROOTS + ("fc8",)}
    assert len(eps) == 229 and hsc_ckpt.is_official_eps(eps) and not hsc_ckpt.is_official(eps)
    model = voc(EPSModule)
    hsc_ckpt.load_official_state(model, eps, "eps")
    assert torch.equal(model.classifier.weight, state["fc8.weight"])


@pytest.mark.slow
def test_infer_cli_with_the_release_writes_the_reference_outputs(state, tmp_path):
    """`python -m wsss.infer method=hsc ckpt=HSC_eps_v2.pth ... split=train`: the score dicts (GT-labelled classes only)
    to 1e-4, the pred PNGs (bg 0.22) and the CRF PNGs (crf=hsc, t 8, alpha 7) identical to the reference's."""
    ckpt = tmp_path / "HSC_eps_v2.pth"
    torch.save(state, ckpt)
    root = tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for image_id in IMAGES:
        (root / "JPEGImages" / f"{image_id}.jpg").write_bytes((FIX / f"{image_id}.png").read_bytes())
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{i}\n" for i in IMAGES))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "wsss.infer", "method=hsc", f"ckpt={ckpt}", f"dataset.root={root}",
                           "split=train", f"out_dir={out}", f"hydra.run.dir={tmp_path / 'run'}", "workers=1",
                           "loader_workers=0", "device=cpu"],
                          cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = np.load(FIX / "reference_scores.npz")
    for image_id in IMAGES:
        ours = np.load(out / "scores" / f"{image_id}.npy", allow_pickle=True).item()
        keys = sorted(int(k.split("__")[1]) for k in ref.files if k.startswith(image_id))
        assert sorted(ours) == keys
        for k in keys:
            assert ours[k].dtype == np.float32
            np.testing.assert_allclose(ours[k], ref[f"{image_id}__{k}"], atol=1e-4, rtol=0)
        for folder, name in (("pred", "reference_pred"), ("crf", "reference_crf")):
            assert np.array_equal(np.asarray(Image.open(out / folder / f"{image_id}.png")),
                                  np.asarray(Image.open(FIX / f"{name}_{image_id}.png"))), (folder, image_id)
