"""Multi-scale + flip aggregation of a method's raw scores, for a batch of same-size images."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


@torch.inference_mode()
def aggregate_raw_scores(model, inputs: Sequence[torch.Tensor], size: Sequence[int], flip: bool = True,
                         aggregation: str = "sum") -> torch.Tensor:
    """``B x K x H x W`` raw scores at the original ``size``.

    ``inputs``: one ``B x 3 x h_s x w_s`` tensor per scale. Each scale is one forward of the batch and,
    with ``flip``, its mirror images in the same batch; every output is resized to ``size`` (bilinear,
    ``align_corners=False``), un-flipped, and the ``2 x len(scales)`` maps are summed or averaged
    (``aggregation``, the method's ``score_aggregation``).
    """
    if aggregation not in ("sum", "mean"):
        raise ValueError(f"aggregation must be sum or mean, not {aggregation!r}")
    total, count = None, 0
    for x in inputs:
        b = x.shape[0]
        batch = torch.cat([x, x.flip(-1)]) if flip else x
        raw = model.raw_scores(batch).float()
        raw = F.interpolate(raw, size=tuple(size), mode="bilinear", align_corners=False)
        part = raw[:b] + raw[b:].flip(-1) if flip else raw
        total = part if total is None else total + part
        count += 2 if flip else 1
    return total / count if aggregation == "mean" else total
