"""Read MXNet ``.params`` files (NDArray lists) without MXNet, and rename ResNet-38's.

The ResNet-38 ImageNet weights of RTC / SEAM / PSA / HSC, ``ilsvrc-cls_rna-a1_cls1000_ep-0001.params``,
were written by MXNet's ``save_checkpoint`` in 2016. MXNet is not installable on current Python, so
the binary layout is read directly. Everything is little-endian.

File (``NDArray::Save`` of a list)::

    u64 0x112 (list magic)   u64 0 (reserved)
    u64 n                    then n arrays (below)
    u64 m                    then m names: u64 length + UTF-8 bytes   (m == n, or 0 for no names)

One array, by layout (detected per array from its first u32):

- legacy (before 2017-05, the real ResNet-38 file): ``u32 ndim`` (no magic), ``ndim x u32`` dims;
  ``ndim == 0`` is an empty array and ends the record;
- V1 ``u32 0xF993FAC8``: ``u32 ndim`` + ``ndim x i64`` dims;
- V2 ``u32 0xF993FAC9`` (MXNet 1.x ``mx.nd.save``): ``i32 storage type`` (0 dense; sparse arrays
  are refused), then ``u32 ndim`` + ``ndim x i64`` dims, ``ndim == 0`` meaning empty;
- V3 ``u32 0xF993FACA`` (numpy semantics): as V2, but ``ndim`` is ``i32`` and ``-1`` means empty
  (``0`` is a scalar);

then, for a non-empty array: ``i32 dev_type``, ``i32 dev_id``, ``i32 type_flag`` (0 float32,
1 float64, 2 float16, 3 uint8, 4 int32, 5 int8, 6 int64) and the raw data, C order.

Names carry MXNet's ``arg:`` / ``aux:`` prefixes. :func:`resnet38d_name` renames them exactly as
the seed repos' ``convert_mxnet_to_torch`` does (``network/resnet38d.py``).
"""
from __future__ import annotations

import mmap
import re
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

LIST_MAGIC = 0x112
V1_MAGIC, V2_MAGIC, V3_MAGIC = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8, 6: np.int64}
_LAYOUT_NAMES = {V1_MAGIC: "V1", V2_MAGIC: "V2", V3_MAGIC: "V3"}


class MXNetFormatError(ValueError):
    """The file is not a readable MXNet NDArray list (or not the ResNet-38 one)."""


def is_mxnet_params(path: str | Path) -> bool:
    """True when the file starts with MXNet's NDArray-list magic."""
    with open(path, "rb") as f:
        head = f.read(8)
    return len(head) == 8 and struct.unpack("<Q", head)[0] == LIST_MAGIC


class _Reader:
    def __init__(self, buf, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, fmt: str, what: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise MXNetFormatError(
                f"{self.path}: truncated MXNet .params file: {what} needs {size} bytes at offset {self.pos}, "
                f"the file has {len(self.buf)}; re-download it")
        out = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return out

    def array(self, dtype, count: int, what: str) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        if self.pos + size > len(self.buf):
            raise MXNetFormatError(
                f"{self.path}: truncated MXNet .params file: data of {what} needs {size} bytes at offset "
                f"{self.pos}, the file has {len(self.buf)}; re-download it")
        out = np.frombuffer(self.buf, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=self.pos)
        self.pos += size
        return out.astype(np.dtype(dtype), copy=True)


def _read_one(r: _Reader, index: int) -> Tuple[Optional[np.ndarray], str]:
    what = f"array #{index}"
    (first,) = r.take("<I", what)
    layout = _LAYOUT_NAMES.get(first, "legacy")
    if layout == "legacy":
        ndim = first
        if ndim > 32:
            raise MXNetFormatError(f"{r.path}: {what} starts with {first:#x}: neither a shape (legacy layout) "
                                   "nor an NDArray magic; not an MXNet .params file or a corrupt one")
        shape = r.take(f"<{ndim}I", what) if ndim else ()
        if ndim == 0:
            return None, layout
    else:
        if layout in ("V2", "V3"):
            (stype,) = r.take("<i", what)
            if stype != 0:
                raise MXNetFormatError(f"{r.path}: {what} has sparse storage type {stype}; only dense arrays "
                                       "are supported (re-save it dense with mx.nd.save)")
        (ndim,) = r.take("<i" if layout == "V3" else "<I", what)
        if (layout == "V3" and ndim < 0) or (layout != "V3" and ndim == 0):
            return None, layout
        if ndim > 32 or ndim < 0:
            raise MXNetFormatError(f"{r.path}: {what} claims {ndim} dimensions; corrupt file")
        shape = r.take(f"<{ndim}q", what) if ndim else ()
    _dev_type, _dev_id, type_flag = r.take("<iii", what)
    if type_flag not in DTYPES:
        raise MXNetFormatError(f"{r.path}: {what} has unknown MXNet type flag {type_flag}")
    count = int(np.prod(shape)) if shape else 1
    data = r.array(DTYPES[type_flag], count, what)
    return data.reshape(tuple(int(s) for s in shape)), layout


def read_ndarray_list(path: str | Path) -> "OrderedDict[str, np.ndarray]":
    """All arrays of an MXNet ``.params`` / ``mx.nd.save`` file, by name (``arg:``/``aux:`` kept).

    Unnamed lists get the names ``"0"``, ``"1"``, ...; empty (none) arrays are skipped.
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            raise MXNetFormatError(f"{path}: empty file, not an MXNet .params file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            r = _Reader(buf, path)
            magic, _reserved = r.take("<QQ", "the list header")
            if magic != LIST_MAGIC:
                raise MXNetFormatError(f"{path}: no MXNet NDArray-list magic 0x112 at the start "
                                       f"(found {magic:#x}); not an MXNet .params file")
            (n,) = r.take("<Q", "the array count")
            if n > 1_000_000:
                raise MXNetFormatError(f"{path}: claims {n} arrays; corrupt file")
            arrays: List[Optional[np.ndarray]] = [_read_one(r, i)[0] for i in range(n)]
            (m,) = r.take("<Q", "the name count")
            if m not in (0, n):
                raise MXNetFormatError(f"{path}: {n} arrays but {m} names; corrupt file")
            names = []
            for i in range(m):
                (length,) = r.take("<Q", f"name #{i}")
                raw = r.array(np.uint8, length, f"name #{i}")
                names.append(raw.tobytes().decode("utf-8"))
    if not names:
        names = [str(i) for i in range(n)]
    return OrderedDict((k, v) for k, v in zip(names, arrays) if v is not None)


_BLOCK = re.compile(r"^(res|bn)(\d+)(a|b(\d+))_branch(1|2a|2b1|2b2)_(weight|gamma|beta|moving_mean|moving_var)$")
_BN_PARAM = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_var": "running_var"}
DROPPED_PREFIXES = ("linear1000_",)


def resnet38d_name(mx_name: str) -> Optional[str]:
    """The ``resnet38d`` state-dict key for an MXNet ResNet-38 name; None for the dropped classifier.

    ``res4b3_branch2a_weight`` -> ``b4_3.conv_branch2a.weight``,
    ``bn5a_branch2b1_moving_var`` -> ``b5.bn_branch2b1.running_var``, ``bn7_gamma`` -> ``bn7.weight``.
    """
    name = mx_name.split(":", 1)[1] if mx_name.startswith(("arg:", "aux:")) else mx_name
    if name.startswith(DROPPED_PREFIXES):
        return None
    if name == "conv1a_weight":
        return "conv1a.weight"
    if name.startswith("bn7_") and name[4:] in _BN_PARAM:
        return "bn7." + _BN_PARAM[name[4:]]
    m = _BLOCK.match(name)
    if m is None:
        raise KeyError(mx_name)
    kind, stage, letter, sub, branch, param = m.groups()
    block = f"b{stage}" if letter == "a" else f"b{stage}_{sub}"
    if kind == "res":
        if param != "weight":
            raise KeyError(mx_name)
        return f"{block}.conv_branch{branch}.weight"
    if param == "weight":
        raise KeyError(mx_name)
    return f"{block}.bn_branch{branch}.{_BN_PARAM[param]}"


def convert_resnet38d(arrays: Dict[str, np.ndarray], path: str | Path = "<arrays>") -> "OrderedDict[str, torch.Tensor]":
    """Rename an MXNet ResNet-38 array dict to ``resnet38d`` keys (the classifier is dropped)."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    unknown = []
    for mx_name, value in arrays.items():
        try:
            key = resnet38d_name(mx_name)
        except KeyError:
            unknown.append(mx_name)
            continue
        if key is None:
            continue
        if key in out:
            raise MXNetFormatError(f"{path}: two MXNet arrays map to '{key}' (second: '{mx_name}')")
        out[key] = torch.from_numpy(np.ascontiguousarray(value))
    if unknown:
        shown = ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else "")
        raise MXNetFormatError(
            f"{path}: {len(unknown)} MXNet arrays are not ResNet-38 (ilsvrc-cls_rna-a1) parameters: {shown}. "
            "Only the ResNet-38 ImageNet .params file is supported")
    return out


def load_resnet38d_params(path: str | Path) -> "OrderedDict[str, torch.Tensor]":
    """Read ``ilsvrc-cls_rna-a1_cls1000_ep-0001.params`` as a ``resnet38d`` state dict."""
    return convert_resnet38d(read_ndarray_list(path), path)
