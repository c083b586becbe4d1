"""Forward+backward throughput of each backbone at its recipes' crop size.

For every backbone: fp32 / bf16 (autocast) x channels_last off / on, images per second over
``--iters`` timed steps after ``--warmup`` steps, and the ratio to the reference setting of the
same run (fp32, contiguous NCHW, what the seed repos do).

    python scripts/bench/backbones.py                                   # recipe crops, CPU, tiny run
    python scripts/bench/backbones.py --backbones resnet38d --size 128 --iters 3
    python scripts/bench/backbones.py --device cuda --batch 8 --iters 20 --json bench.json

Recipe crops: resnet38d 448 (RTC, HSC; ws-fcn uses 321), resnet101_deepstem 512 (SPML; 448 for the
RTC/HSC DeepLab v2), resnet101 / resnet50 512 (RecurSeed DeepLab v3+).
"""
from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext

import torch

from wsss.models.backbones import build_backbone

RECIPE_CROP = {"resnet38d": 448, "resnet101_deepstem": 512, "resnet101": 512, "resnet50": 512}
EXTRA_KWARGS = {"resnet101": {"output_stride": 16}, "resnet50": {"output_stride": 16}}


def bench_one(name: str, size: int, batch: int, precision: str, channels_last: bool, iters: int, warmup: int,
              device: torch.device) -> float:
    net = build_backbone(name, **EXTRA_KWARGS.get(name, {})).to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=fmt)
    cast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if precision == "bf16"
            else nullcontext())

    def step():
        with cast:
            feats = net(x)
            loss = sum(f.float().mean() for f in feats.values())
        loss.backward()
        net.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * iters / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default=",".join(RECIPE_CROP), help="comma-separated registry names")
    ap.add_argument("--size", type=int, default=None, help="square crop for all (default: each recipe's crop)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--channels-last", default="off,on", help="off, on or off,on")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    print(f"device={device} batch={args.batch} iters={args.iters} warmup={args.warmup} torch={torch.__version__}")
    print(f"{'backbone':20s} {'size':>5s} {'prec':>5s} {'ch_last':>7s} {'img/s':>9s} {'vs fp32/NCHW':>12s}")
    for name in [b for b in args.backbones.split(",") if b]:
        size = args.size or RECIPE_CROP.get(name, 224)
        base = None
        for prec in args.precisions.split(","):
            for cl in args.channels_last.split(","):
                ips = bench_one(name, size, args.batch, prec, cl == "on", args.iters, args.warmup, device)
                if base is None:
                    base = ips  # the first setting is the reference (fp32, NCHW by default order)
                rows.append({"backbone": name, "size": size, "precision": prec, "channels_last": cl == "on",
                             "images_per_s": ips, "ratio_vs_reference": ips / base})
                print(f"{name:20s} {size:5d} {prec:>5s} {cl:>7s} {ips:9.3f} {ips / base:11.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
