"""Convert the ResNet-38 MXNet ImageNet weights to a PyTorch ``.pth`` without MXNet.

    python scripts/convert_mxnet_params.py ilsvrc-cls_rna-a1_cls1000_ep-0001.params resnet38d_imagenet.pth

The output is a plain ``resnet38d`` state dict (191 tensors for the real file, the classifier
``linear1000`` dropped), the same names as the seed repos' ``convert_mxnet_to_torch`` and the
1-stage-wseg download. The result is checked against the ``resnet38d`` backbone before it is written
(atomically). ``backbone.weights=`` also accepts the ``.params`` file directly.

An input that is already a PyTorch checkpoint (zip or legacy pickle ``.pth``) needs no conversion: the
script says so and exits with status 1, as it does, with one line naming the file, for any input it cannot
read or convert.
"""
from __future__ import annotations

import argparse
import io
import shlex
import sys
from pathlib import Path

import torch

from wsss.checkpoints.mxnet import MXNetFormatError, convert_resnet38d, read_ndarray_list
from wsss.data.formats import atomic_write_bytes


class InputError(Exception):
    """The input cannot be converted; the message names the file and says why."""


def pytorch_kind(path: Path) -> str | None:
    """``"zip"`` / ``"legacy pickle"`` when ``path`` is a PyTorch checkpoint, else None."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        import zipfile

        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return None
        # torch.save's zip: <archive>/data.pkl (+ <archive>/data/<n> storages)
        return "zip" if any(n.endswith("data.pkl") for n in names) else None
    return "legacy pickle" if head[:1] == b"\x80" else None


def check_input(path: Path) -> None:
    """Raise :class:`InputError` for a missing / unreadable input or one that is already PyTorch."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file (expected an MXNet .params file)")
    try:
        kind = pytorch_kind(path)
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from e
    if kind is not None:
        raise InputError(
            f"{path} is a PyTorch checkpoint ({kind} .pth), not an MXNet .params file: no conversion needed; "
            f"pass it directly as {shlex.quote(f'backbone.weights={path}')}")


def convert(params: Path, check: bool = True) -> tuple:
    """Read, convert and check ``params``; returns ``(n MXNet arrays, state dict)``. Raises
    :class:`InputError` when the input is not a readable ResNet-38 ``.params`` file."""
    check_input(params)
    try:
        arrays = read_ndarray_list(params)
        n_in = len(arrays)
        state = convert_resnet38d(arrays, params)
    except MXNetFormatError as e:  # its message starts with the path
        raise InputError(str(e)) from e
    except OSError as e:
        raise InputError(f"{params}: cannot read: {e.strerror or e}") from e
    del arrays
    if check:
        from wsss.checkpoints.imagenet import WeightsFormatError, check_state_dict
        from wsss.models.backbones import build_backbone

        try:
            check_state_dict(build_backbone("resnet38d"), state, source=str(params), strict=True)
        except WeightsFormatError as e:
            raise InputError(str(e)) from e
    return n_in, state


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("params", type=Path, help="MXNet .params file (legacy, V1, V2 or V3 layout)")
    ap.add_argument("out", type=Path, help="output .pth")
    ap.add_argument("--no-check", action="store_true", help="skip loading the result into resnet38d")
    args = ap.parse_args(argv)

    try:
        n_in, state = convert(args.params, check=not args.no_check)
    except InputError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return 1
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    atomic_write_bytes(args.out, buf.getvalue())
    print(f"{args.params}: {n_in} MXNet arrays -> {len(state)} resnet38d tensors -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
