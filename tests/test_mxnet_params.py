"""The MXNet .params reader and ResNet-38 renaming, on files the test writes in MXNet's binary layout."""
from __future__ import annotations

import importlib.util
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss.checkpoints.mxnet import MXNetFormatError, convert_resnet38d, read_ndarray_list, resnet38d_name
from wsss.models.backbones import build_backbone

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mxnet_writer", ROOT / "tests/fixtures/backbones/mxnet_writer.py")
mxw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mxw)


def _sample_arrays():
    rng = np.random.default_rng(0)
    return OrderedDict([
        ("arg:conv1a_weight", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
        ("arg:bn2a_branch2a_gamma", rng.standard_normal(4).astype(np.float32)),
        ("aux:bn2a_branch2a_moving_var", rng.random(4).astype(np.float32)),
        ("arg:res4b3_branch2b1_weight", rng.standard_normal((2, 5, 3, 3)).astype(np.float32)),
        ("aux:bn7_moving_mean", rng.standard_normal(6).astype(np.float32)),
        ("arg:linear1000_bias", rng.standard_normal(7).astype(np.float32)),
        ("arg:other_f64", rng.standard_normal((2, 2)).astype(np.float64)),
        ("arg:other_f16", rng.standard_normal(3).astype(np.float16)),
        ("aux:other_i64", np.arange(5, dtype=np.int64)),
        ("aux:other_u8", np.arange(9, dtype=np.uint8).reshape(3, 3)),
    ])


@pytest.mark.parametrize("layout", ["legacy", "v1", "v2", "v3"])
def test_round_trip_names_values_dtypes(tmp_path, layout):
    arrays = _sample_arrays()
    path = tmp_path / f"{layout}.params"
    path.write_bytes(mxw.encode_list(arrays, layout))
    back = read_ndarray_list(path)
    assert list(back) == list(arrays)
    for k in arrays:
        assert back[k].dtype == arrays[k].dtype and back[k].shape == arrays[k].shape
        np.testing.assert_array_equal(back[k], arrays[k])


def test_unnamed_list_gets_positional_names(tmp_path):
    path = tmp_path / "unnamed.params"
    path.write_bytes(mxw.encode_list(_sample_arrays(), "v2", with_names=False))
    assert list(read_ndarray_list(path))[:3] == ["0", "1", "2"]


def test_renaming_matches_seed_convert_mxnet_to_torch():
    # examples worked out by hand from convert_mxnet_to_torch in SEAM/RTC network/resnet38d.py
    assert resnet38d_name("arg:conv1a_weight") == "conv1a.weight"
    assert resnet38d_name("arg:res2a_branch1_weight") == "b2.conv_branch1.weight"
    assert resnet38d_name("arg:res4b5_branch2b1_weight") == "b4_5.conv_branch2b1.weight"
    assert resnet38d_name("arg:bn3b2_branch2a_beta") == "b3_2.bn_branch2a.bias"
    assert resnet38d_name("aux:bn6a_branch2b2_moving_mean") == "b6.bn_branch2b2.running_mean"
    assert resnet38d_name("aux:bn7_moving_var") == "bn7.running_var"
    assert resnet38d_name("arg:linear1000_weight") is None
    with pytest.raises(KeyError):
        resnet38d_name("arg:fc8_weight")


def test_full_resnet38d_name_set_is_a_bijection():
    keys = [k for k in build_backbone("resnet38d").state_dict() if not k.endswith("num_batches_tracked")]
    assert len(keys) == 191
    mx_names = [mxw.mxnet_name(k) for k in keys]
    # the 2016 file: 193 arrays = 119 arg: + 74 aux: (with linear1000_weight/bias)
    assert sum(n.startswith("arg:") for n in mx_names) + 2 == 119
    assert sum(n.startswith("aux:") for n in mx_names) == 74
    assert [resnet38d_name(n) for n in mx_names] == keys


def _convert_script():
    spec = importlib.util.spec_from_file_location("convert_mxnet_params", ROOT / "scripts/convert_mxnet_params.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_resnet38d_file_loads_strictly_through_backbone_weights(tmp_path, capsys):
    """A full-size legacy file (as the real one) -> build_backbone(weights=...) and the converter script."""
    entries = json.loads((ROOT / "tests/fixtures/backbones/resnet38d_keys.json").read_text())
    # each array filled with its own index: a swapped or misnamed array cannot go unnoticed
    names = [mxw.mxnet_name(e["name"]) for e in entries if not e["name"].endswith("num_batches_tracked")]
    shapes = [e["shape"] for e in entries if not e["name"].endswith("num_batches_tracked")]
    arrays = OrderedDict((n, np.full(s, i, np.float32)) for i, (n, s) in enumerate(zip(names, shapes)))
    arrays["arg:linear1000_weight"] = np.zeros((1000, 4096), np.float32)
    arrays["arg:linear1000_bias"] = np.zeros((1000,), np.float32)
    path = tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001.params"
    path.write_bytes(mxw.encode_list(arrays, "legacy"))

    net = build_backbone("resnet38d", weights=str(path))
    got = {mxw.mxnet_name(k): v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert set(got) | {"arg:linear1000_weight", "arg:linear1000_bias"} == set(arrays)
    for i, name in enumerate(names):
        assert got[name].shape == arrays[name].shape and bool((got[name] == i).all()), name
    del net, got

    out = tmp_path / "resnet38d.pth"
    assert _convert_script().main([str(path), str(out), "--no-check"]) == 0
    assert "193 MXNet arrays -> 191 resnet38d tensors" in capsys.readouterr().out
    sd = torch.load(out, map_location="cpu", weights_only=True)
    assert len(sd) == 191
    np.testing.assert_array_equal(sd["b4_3.bn_branch2a.running_var"].numpy(),
                                  arrays["aux:bn4b3_branch2a_moving_var"])


def test_truncated_file_names_file_and_offset(tmp_path):
    data = mxw.encode_list(_sample_arrays(), "v2")
    path = tmp_path / "cut.params"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MXNetFormatError, match=r"cut\.params: truncated"):
        read_ndarray_list(path)


def test_sparse_and_garbage_are_refused(tmp_path):
    arrays = _sample_arrays()
    data = bytearray(mxw.encode_list(arrays, "v2"))
    data[28:32] = (1).to_bytes(4, "little")  # storage type of array #0 -> row_sparse
    path = tmp_path / "sparse.params"
    path.write_bytes(bytes(data))
    with pytest.raises(MXNetFormatError, match="sparse"):
        read_ndarray_list(path)
    bad = tmp_path / "not.params"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(MXNetFormatError, match="not.params.*magic"):
        read_ndarray_list(bad)


def test_other_network_in_params_is_named(tmp_path):
    path = tmp_path / "vgg.params"
    path.write_bytes(mxw.encode_list({"arg:conv1_1_weight": np.zeros((2, 3, 3, 3), np.float32)}, "v2"))
    with pytest.raises(MXNetFormatError, match="vgg.params.*not ResNet-38"):
        convert_resnet38d(read_ndarray_list(path), path)


# --- the converter script on inputs it cannot convert: one clear line naming the file, no traceback, exit != 0

def _run_convert(*args, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(ROOT / "scripts/convert_mxnet_params.py"), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy_pickle"])
def test_convert_script_on_pytorch_file_says_no_conversion_needed(tmp_path, zipped):
    path = tmp_path / "resnet38d_imagenet.pth"
    torch.save({"conv1a.weight": torch.zeros(2, 3, 3, 3)}, path, _use_new_zipfile_serialization=zipped)
    out = tmp_path / "out.pth"
    proc = _run_convert(path, out, cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert str(path) in proc.stderr and "PyTorch checkpoint" in proc.stderr, proc.stderr
    assert f"backbone.weights={path}" in proc.stderr and "no conversion" in proc.stderr, proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "garbage", "truncated", "other_network"])
def test_convert_script_on_unreadable_input_names_the_file(tmp_path, case):
    path = tmp_path / f"{case}.params"
    expect = {"missing": "not found", "directory": "not a file", "empty": "empty", "garbage": "magic",
              "truncated": "truncated", "other_network": "not ResNet-38"}[case]
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "garbage":
        path.write_bytes(b"\x01\x02garbage" * 8)
    elif case == "truncated":
        data = mxw.encode_list(_sample_arrays(), "v2")
        path.write_bytes(data[: len(data) // 2])
    elif case == "other_network":
        path.write_bytes(mxw.encode_list({"arg:conv1_1_weight": np.zeros((2, 3, 3, 3), np.float32)}, "v2"))
    out = tmp_path / "out.pth"
    proc = _run_convert(path, out, cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert str(path) in proc.stderr and expect in proc.stderr, proc.stderr
    assert not out.exists()
