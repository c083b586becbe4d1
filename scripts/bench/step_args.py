"""The command line shared by the training-step benchmarks (rtc_step.py, spml_step.py)."""
from __future__ import annotations

import argparse


def step_parser(description: str, ref_help: str, size: int) -> argparse.ArgumentParser:
    """``--ref --device --size --batch --iters --warmup --threads``; each benchmark adds its own flags."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--ref", default=None, help=ref_help)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=size)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1: CPU-time measurement is exact)")
    return ap
