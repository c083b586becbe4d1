"""resnet101_deepstem matches SPML's ResnetBackbone key for key and output for output."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss.models.backbones import build_backbone

FIX = Path(__file__).parent / "fixtures" / "backbones"
_spec = importlib.util.spec_from_file_location("seeded", FIX / "seeded.py")
seeded = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seeded)


def _reference_state_dict():
    entries = json.loads((FIX / "resnet101_deepstem_keys.json").read_text())
    return {e["name"]: torch.zeros(e["shape"], dtype=getattr(torch, e["dtype"])) for e in entries}


def test_reference_keys_and_shapes_load_strictly():
    net = build_backbone("resnet101_deepstem")
    ref = _reference_state_dict()
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == {k: tuple(v.shape) for k, v in ref.items()}
    net.load_state_dict(ref, strict=True)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_parity_with_reference_outputs(output_stride):
    fix = np.load(FIX / "resnet101_deepstem_parity.npz")
    seed = int(fix["seed"])
    net = build_backbone("resnet101_deepstem", output_stride=output_stride)
    net.load_state_dict(seeded.seeded_state_dict(net.state_dict(), seed))
    net.eval()
    x = seeded.seeded_input(fix["input"].shape, seed)
    assert torch.equal(x, torch.from_numpy(fix["input"]))
    with torch.no_grad():
        out = net(x)
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for key, feat in out.items():
        for part, value in seeded.summarise(f"os{output_stride}_{key}", feat).items():
            np.testing.assert_allclose(value, fix[part], rtol=0, atol=1e-4, err_msg=part)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_strides_match_output_shapes(output_stride):
    net = build_backbone("resnet50_deepstem", output_stride=output_stride).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 64))
    for key, feat in out.items():
        assert feat.shape[1] == net.channels[key]
        assert feat.shape[-1] == 64 // net.strides[key], key
    assert net.strides["res5"] == output_stride


def test_bn_momentum_and_frozen_bn_are_configurable():
    net = build_backbone("resnet50_deepstem", bn_momentum=0.1, frozen_bn=True)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.momentum == 0.1 for m in bns)
    net.train()
    assert all(not m.training and not m.weight.requires_grad for m in bns)
    default = build_backbone("resnet50_deepstem")
    assert all(m.momentum == 3e-4 for m in default.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with pytest.raises(ValueError, match="output_stride"):
        build_backbone("resnet50_deepstem", output_stride=4)
