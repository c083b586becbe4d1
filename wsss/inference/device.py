"""The device and autocast precision of an inference run (``device=``, ``precision=``)."""
from __future__ import annotations

import torch


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name} but no CUDA device is available; use device=cpu")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    if str(precision) in ("32", "fp32", "32-true"):
        return torch.autocast(device.type, enabled=False)
    if str(precision) in ("bf16", "bf16-mixed"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if str(precision) in ("16", "16-mixed", "fp16"):
        return torch.autocast(device.type, dtype=torch.float16)
    raise ValueError(f"precision={precision!r}; use 32, bf16-mixed or 16-mixed")
