"""WS-FCN's released checkpoint: key layout import, wrong files refused, inference parity with the reference
``infer_val.py`` (fixtures and how they were made: tests/fixtures/wsfcn/README.md)."""
from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsss.checkpoints import wsfcn as wsfcn_ckpt
from wsss.methods.wsfcn import WSFCNModule

FIX = Path(__file__).parent / "fixtures" / "wsfcn"
VOC_FEATURES = {"low": "b3", "final": "conv6"}
IDS = ("2007_000032", "2007_000039")


def release_spec():
    return [tuple(e) for e in json.loads((FIX / "release_layout.json").read_text())["keys"]]


def official_state(seed: int):
    """The seeded release layout (a fresh dict over cached tensors: callers may replace entries, not edit them)."""
    return dict(_official_state(seed))


@functools.lru_cache(maxsize=1)
def _official_state(seed: int):
    spec = importlib.util.spec_from_file_location("wsfcn_seeded_state", FIX / "seeded_state.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ref = np.load(FIX / "reference_infer.npz")
    aff = {k.replace("__", "."): torch.from_numpy(ref[k]) for k in ref.files if k.startswith("_aff")}
    return mod.seeded_state_dict(release_spec(), seed, aff)


def voc_wsfcn(pad=None, **kw) -> WSFCNModule:
    inference = {"scales": [1.0, 0.5, 1.5, 2.0], "flip": True, "classes": "predicted", "pred_with_labels": False,
                 "crf": "wsfcn", "cls_threshold": 0.1, "pad_size": pad}
    return WSFCNModule(backbone={"name": "resnet38d"}, num_classes=21, features=VOC_FEATURES,
                       bg={"rule": "threshold", "threshold": 0.25}, eval_with_labels=False, inference=inference, **kw)


@pytest.fixture(scope="module")
def imported():
    ref = np.load(FIX / "reference_infer.npz")
    model = voc_wsfcn(pad=[int(ref["pad"])] * 2)
    wsfcn_ckpt.load_official_state(model, official_state(int(ref["seed"])), source="seeded fixture")
    return model.eval()


def test_layout_fixture_is_the_release():
    """355 tensors, 53 int64 counters, 148,269,820 values (565.6 MiB in fp32: the README's "565M")."""
    spec = release_spec()
    assert len(spec) == 355
    assert sum(d == "int64" for _, _, d in spec) == 53
    assert sum(int(np.prod(s)) for _, s, _ in spec) == 148_269_820
    assert {n for n, _, _ in spec if n.startswith("_aff.") or ".bn." in n} == set(wsfcn_ckpt.DROPPED)


def test_every_official_key_lands_in_the_model(imported):
    """Strict: every model tensor comes from the file, each equal to the official tensor it was mapped from."""
    state = official_state(0)
    converted = wsfcn_ckpt.convert_official(state)
    ours = imported.state_dict()
    assert set(converted) == {k for k in ours if k.startswith(("backbone.", "head."))}
    assert len(converted) == 355 - len(wsfcn_ckpt.DROPPED)
    for key in ("b4_5.conv_branch2b1.weight", "fca.fca4.conv2_2.weight", "align1.flow_make.weight",
                "sf2.bn3v.running_var", "last_conv.8.bias", "bn7.running_mean"):
        want = state[key]
        got = ours[("head." if key.split(".")[0] in wsfcn_ckpt.HEAD_ROOTS else "backbone.") + key]
        assert torch.equal(got, want), key


def test_module_prefix_is_stripped():
    state = {"module." + k: v for k, v in official_state(0).items()}
    converted = wsfcn_ckpt.convert_official(state)
    assert wsfcn_ckpt.is_official(state) and converted["head.last_conv.8.weight"] is state["module.last_conv.8.weight"]


def test_shape_mismatch_is_explained(imported):
    state = official_state(0)
    state["last_conv.8.weight"] = state["last_conv.8.weight"][:5]
    with pytest.raises(ValueError, match="num_classes=21"):
        wsfcn_ckpt.load_official_state(imported, state)


@pytest.mark.parametrize("obj, says", [
    ({"embedding_model": {"a": torch.zeros(1)}, "prediction_model": {}}, "SPML"),
    ({"proj1.weight": torch.zeros(1), "classifier1.weight": torch.zeros(1), "classifier2.weight": torch.zeros(1),
      "conv1a.weight": torch.zeros(1)}, "RTC release"),
    ({"conv1a.weight": torch.zeros(1), "b2.conv_branch1.weight": torch.zeros(1), "bn7.weight": torch.zeros(1)},
     "plain resnet38d"),
    ({"state_dict": {}, "pytorch-lightning_version": "2.4", "wsss": {"method": "cam"}}, "method 'cam'"),
    ({"conv1a.weight": torch.zeros(1), "b2.bn_branch2a.weight": torch.zeros(1), "fc8.weight": torch.zeros(1)},
     "CAM checkpoint"),
])
def test_wrong_method_checkpoint_is_refused(tmp_path, obj, says, imported):
    path = tmp_path / "other.pth"
    torch.save(obj, path)
    with pytest.raises(ValueError, match=says):  # refused before anything is loaded into the model
        wsfcn_ckpt.load_official_into(imported, path)


def test_views_must_fit_the_pad(imported):
    x = torch.zeros(1, 3, 40, 200)
    with pytest.raises(ValueError, match="pad_size"):
        imported.multiscale_raw_scores([x], (40, 200))


@pytest.mark.slow
def test_infer_cli_with_the_release_file_writes_the_reference_outputs(tmp_path):
    """`python -m wsss.infer method=wsfcn ckpt=model_enc_e018Xs0.905.pth method.inference.pad_size=[P,P] ...` on a
    VOC-layout folder, the file as released (a plain state dict, recognised by the importer): the score dicts hold
    the predicted classes only, with the reference's merged masks to 1e-4; the argmax (background 0.25) and CRF
    (crf=wsfcn, the method's default) PNGs equal the reference infer_val.py's."""
    ref = np.load(FIX / "reference_infer.npz")
    pad = int(ref["pad"])
    ckpt = tmp_path / "model_enc_e018Xs0.905.pth"
    torch.save(official_state(int(ref["seed"])), ckpt)
    root = tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for name in IDS:
        (root / "JPEGImages" / f"{name}.jpg").write_bytes((FIX / f"{name}.png").read_bytes())
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(IDS) + "\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "wsss.infer", "method=wsfcn", f"ckpt={ckpt}", f"dataset.root={root}",
                           "split=val", f"out_dir={out}", f"hydra.run.dir={tmp_path / 'run'}", "workers=1",
                           "loader_workers=0", "device=cpu", f"method.inference.pad_size=[{pad},{pad}]"],
                          cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in IDS:
        scores = np.load(out / "scores" / f"{name}.npy", allow_pickle=True).item()
        want = ref[f"{name}__fg"]
        assert sorted(scores) == np.flatnonzero(ref[f"{name}__labels"]).tolist() and 0 < len(scores) < 20
        assert max(np.abs(scores[k] - want[k]).max() for k in scores) < 1e-4
        for kind in ("pred", "crf"):
            assert np.array_equal(np.asarray(Image.open(out / kind / f"{name}.png")),
                                  np.asarray(Image.open(FIX / f"reference_{kind}_{name}.png"))), (kind, name)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["pad_size"] == [pad, pad] and settings["classes"] == "predicted"


def test_wsss_infer_recognises_the_release_without_method(tmp_path):
    """A file with the release's layout passed without method= is answered with `add method=wsfcn`; RTC's importer
    names it too."""
    from wsss.checkpoints import rtc as rtc_ckpt
    from wsss.inference.loading import guess_release

    path = tmp_path / "model_enc_e018Xs0.905.pth"
    torch.save({k: torch.zeros(1) for k in wsfcn_ckpt.SIGNATURE + ("conv1a.weight", "b2.bn_branch2a.weight")}, path)
    assert "add method=wsfcn" in guess_release(path)
    assert "method=wsfcn" in rtc_ckpt.describe(torch.load(path))
