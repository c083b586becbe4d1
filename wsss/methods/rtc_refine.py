"""Pseudo masks for RTC's segmentation branch: CAM refinement by local image affinity.

Follows ``network/VARM.py`` and ``refine_cams_with_bkg_v1`` (``network/losses.py``) of
ChunyanWang1/RTC (itself after ToCo/AFA's PAR; the propagation and the label-restricted softmax are the shared
:mod:`wsss.methods.cam_ops`): the CAM probabilities are propagated
``num_iter`` times over 8-neighbourhoods at several dilations with weights from colour
similarity, once with a high (0.55) and once with a low (0.2) background score; pixels that
are background only under the high score are ignored (255).

Differences from the reference, none changing the result: neighbour shifts are slices
instead of a convolution with one-hot kernels; the image affinity is computed once for
both background scores; all images and both scores go through one batched call with the
per-image class subset gathered to a common width (extra channels hold zero probability
and are excluded from the arg-max).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .cam_ops import image_affinity, label_slots, propagate, restricted_softmax

@torch.no_grad()
def refine_pseudo_mask(image01: torch.Tensor, fg_cams: torch.Tensor, fg_label: torch.Tensor,
                       valid: torch.Tensor | None = None, bg_high: float = 0.55, bg_low: float = 0.2,
                       dilations: Sequence[int] = (1, 2, 4, 8, 12, 24), num_iter: int = 10,
                       down_scale: int = 2, ignore_index: int = 255) -> torch.Tensor:
    """Pseudo mask ``B x H x W`` (0 = background, c = class c, 255 = ignored).

    ``image01``: RGB in [0, 1], ``B x 3 x H x W``; ``fg_cams``: normalised foreground CAMs at the
    image size; ``fg_label``: ``B x C`` multi-hot; ``valid``: ``B x H x W`` bool, False where the crop
    was padded (the reference's ``img_box``), those pixels become ``ignore_index``.
    """
    b, c, h, w = fg_cams.shape
    hs, ws = h // down_scale, w // down_scale
    small = F.interpolate(image01, size=(hs, ws), mode="bilinear", align_corners=False)
    affinity = image_affinity(small, dilations)

    keys = torch.cat([torch.ones_like(fg_label[:, :1]), fg_label], dim=1) > 0.5  # B x (1+C)
    order, slot_ok = label_slots(keys)

    results = []
    for bg in (bg_high, bg_low):
        cams = torch.cat([torch.full_like(fg_cams[:, :1], bg), fg_cams], dim=1)
        cams = F.interpolate(cams, size=(hs, ws), mode="bilinear", align_corners=False)
        results.append(restricted_softmax(cams, order, slot_ok))
    probs = torch.cat(results, dim=0)
    refined = propagate(probs, affinity.repeat(2, 1, 1, 1, 1), dilations, num_iter)
    refined = F.interpolate(refined, size=(h, w), mode="bilinear", align_corners=False)
    refined = refined.masked_fill(~slot_ok.repeat(2, 1)[:, :, None, None], float("-inf"))
    labels = torch.gather(order.repeat(2, 1), 1, refined.argmax(dim=1).flatten(1)).view(2 * b, h, w)
    high, low = labels[:b], labels[b:]
    out = high.clone()
    out[high == 0] = ignore_index
    out[(high == 0) & (low == 0)] = 0
    if valid is not None:
        out[~valid] = ignore_index
    return out
