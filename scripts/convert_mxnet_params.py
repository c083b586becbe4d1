"""Convert the ResNet-38 MXNet ImageNet weights to a PyTorch ``.pth`` without MXNet.

    python scripts/convert_mxnet_params.py ilsvrc-cls_rna-a1_cls1000_ep-0001.params resnet38d_imagenet.pth

The output is a plain ``resnet38d`` state dict (191 tensors for the real file, the classifier
``linear1000`` dropped), the same names as the seed repos' ``convert_mxnet_to_torch`` and the
1-stage-wseg download. The result is checked against the ``resnet38d`` backbone before it is written
(atomically). ``backbone.weights=`` also accepts the ``.params`` file directly.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import torch

from wsss.checkpoints.mxnet import convert_resnet38d, read_ndarray_list
from wsss.data.formats import atomic_write_bytes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("params", type=Path, help="MXNet .params file (legacy, V1, V2 or V3 layout)")
    ap.add_argument("out", type=Path, help="output .pth")
    ap.add_argument("--no-check", action="store_true", help="skip loading the result into resnet38d")
    args = ap.parse_args(argv)

    arrays = read_ndarray_list(args.params)
    n_in = len(arrays)
    state = convert_resnet38d(arrays, args.params)
    del arrays
    if not args.no_check:
        from wsss.checkpoints.imagenet import check_state_dict
        from wsss.models.backbones import build_backbone

        check_state_dict(build_backbone("resnet38d"), state, source=str(args.params), strict=True)
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    atomic_write_bytes(args.out, buf.getvalue())
    print(f"{args.params}: {n_in} MXNet arrays -> {len(state)} resnet38d tensors -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
