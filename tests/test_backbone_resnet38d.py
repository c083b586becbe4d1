"""resnet38d matches the seed repos' network key for key and output for output."""
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


@pytest.fixture(scope="module")
def net():
    return build_backbone("resnet38d")


def _reference_state_dict(name: str):
    entries = json.loads((FIX / f"{name}_keys.json").read_text())
    return {e["name"]: torch.zeros(e["shape"], dtype=getattr(torch, e["dtype"])) for e in entries}


def test_reference_keys_and_shapes_load_strictly(net):
    ref = _reference_state_dict("resnet38d")
    assert len(ref) == len(net.state_dict())
    net_shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert net_shapes == {k: tuple(v.shape) for k, v in ref.items()}
    net.load_state_dict(ref, strict=True)


def test_parity_with_reference_outputs(net):
    fix = np.load(FIX / "resnet38d_parity.npz")
    seed = int(fix["seed"])
    net.load_state_dict(seeded.seeded_state_dict(net.state_dict(), seed))
    net.eval()
    x = seeded.seeded_input(fix["input"].shape, seed)
    assert torch.equal(x, torch.from_numpy(fix["input"])), "input rule drifted from the fixture"
    with torch.no_grad():
        out = net(x)
    assert list(out) == ["b3", "conv3", "conv4", "conv5", "conv6"]
    for key in out:
        got = seeded.summarise(key, out[key])
        for part, value in got.items():
            np.testing.assert_allclose(value, fix[part], rtol=0, atol=1e-4, err_msg=part)


def test_channels_strides_and_shapes(net):
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 32, 40))
    for key, feat in out.items():
        assert feat.shape[1] == net.channels[key]
        assert feat.shape[-2:] == (32 // net.strides[key], 40 // net.strides[key])
    assert net.final_key == "conv6" and net.out_channels == 4096


def test_seed_freezing_and_bn_eval():
    net = build_backbone("resnet38d")
    net.train()
    frozen = ("conv1a.", "b2.", "b2_1.", "b2_2.")
    for name, p in net.named_parameters():
        is_bn = ".bn" in name or name.startswith("bn7")
        assert p.requires_grad == (not name.startswith(frozen) and not is_bn), name
    assert all(not m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert net.b6.dropout_2b1.training  # dropout still follows the train/eval switch


def test_freezing_is_configurable():
    net = build_backbone("resnet38d", frozen=["conv1a"], bn_eval=False)
    net.train()
    assert not net.conv1a.weight.requires_grad
    assert net.b2.conv_branch2a.weight.requires_grad and net.b2.bn_branch2a.weight.requires_grad
    assert net.b2.bn_branch2a.training
    with pytest.raises(ValueError, match="b9"):
        build_backbone("resnet38d", frozen=["b9"])


def test_gradients_reach_trainable_blocks():
    net = build_backbone("resnet38d")
    net.train()
    out = net(torch.randn(2, 3, 24, 24))
    out["conv6"].mean().backward()
    assert net.b3.conv_branch2a.weight.grad is not None
    assert net.b2.conv_branch2a.weight.grad is None
