"""The background rule, defined once per method in config and applied here only.

Foreground scores are normalised CAMs in [0, 1] (C x H x W, no background).
* ``threshold``: a constant background plane at ``t`` (SEAM/RTC evaluation);
* ``power``: background = (1 - max_c fg)^alpha (SEAM/PSA pseudo labels);
* ``learned``: the method predicts background itself; scores already have it.
"""
from __future__ import annotations

import torch


def add_background(fg: torch.Tensor, rule: str = "threshold", threshold: float = 0.2,
                   alpha: float = 1.0) -> torch.Tensor:
    """Prepend a background channel to ``fg`` (... x C x H x W) following ``rule``."""
    if rule == "threshold":
        bg = torch.full_like(fg[..., :1, :, :], float(threshold))
    elif rule == "power":
        top = fg.max(dim=-3, keepdim=True).values if fg.shape[-3] else torch.zeros_like(fg[..., :1, :, :])
        bg = (1.0 - top).clamp_min(0).pow(alpha)
    elif rule == "learned":
        return fg
    else:
        raise ValueError(f"unknown background rule '{rule}'; use threshold, power or learned")
    return torch.cat([bg, fg], dim=-3)
