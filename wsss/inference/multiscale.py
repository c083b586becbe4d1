"""Multi-scale + flip aggregation of raw scores, for a batch of same-size images."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F


@torch.no_grad()
def combine_scales(raw_scores: Callable[[torch.Tensor], torch.Tensor], inputs: Sequence[torch.Tensor],
                   size: Sequence[int], flip: bool = True, aggregation: str = "sum",
                   channels_last: bool = False) -> torch.Tensor:
    """``B x K x H x W`` raw scores at the original ``size`` (the default ``WSSSModule.multiscale_raw_scores``).

    ``inputs``: one ``B x 3 x h_s x w_s`` tensor per scale. Each scale is one call of ``raw_scores`` on the batch
    and, with ``flip``, its mirror images in the same batch; every output is resized to ``size`` (bilinear,
    ``align_corners=False``), un-flipped, and the ``2 x len(scales)`` maps are summed or averaged
    (``aggregation``). A map and its mirror are added before the resize (bilinear resizing commutes with
    mirroring), which halves the resize work.
    ``channels_last``: NHWC inputs (faster oneDNN / cuDNN kernels; the model should be NHWC too).
    """
    if aggregation not in ("sum", "mean"):
        raise ValueError(f"aggregation must be sum or mean, not {aggregation!r}")
    total, count = None, 0
    for x in inputs:
        b = x.shape[0]
        batch = torch.cat([x, x.flip(-1)]) if flip else x
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        raw = raw_scores(batch).float()
        raw = raw[:b] + raw[b:].flip(-1) if flip else raw
        part = F.interpolate(raw, size=tuple(size), mode="bilinear", align_corners=False)
        total = part if total is None else total + part
        count += 2 if flip else 1
    return total / count if aggregation == "mean" else total


def aggregate_raw_scores(model, inputs: Sequence[torch.Tensor], size: Sequence[int], flip: bool = True,
                         aggregation: str | None = None, channels_last: bool = False,
                         output: str | None = None) -> torch.Tensor:
    """``model.multiscale_raw_scores`` (the method's own multi-scale rule) under the no-grad inference mode."""
    with torch.no_grad():
        return model.multiscale_raw_scores(inputs, size, flip, aggregation, channels_last, output)
