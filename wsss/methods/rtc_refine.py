"""Pseudo masks for RTC's segmentation branch: CAM refinement by local image affinity.

Follows ``network/VARM.py`` and ``refine_cams_with_bkg_v1`` (``network/losses.py``) of
ChunyanWang1/RTC (itself after ToCo/AFA's PAR): the CAM probabilities are propagated
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

# kernel positions (row, col) of the reference's 8 shift kernels, in their order
_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def dilated_neighbours(x: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """``B x C x H x W`` -> ``B x C x 8*len(dilations) x H x W`` (replicate padding)."""
    h, w = x.shape[-2:]
    out = []
    for d in dilations:
        p = F.pad(x, [d] * 4, mode="replicate")
        for dy, dx in _OFFSETS:
            out.append(p[..., d + dy * d: d + dy * d + h, d + dx * d: d + dx * d + w])
    return torch.stack(out, dim=2)


def image_affinity(image: torch.Tensor, dilations: Sequence[int], w2: float = 0.01) -> torch.Tensor:
    """VARM's neighbour weights ``B x 1 x P x H x W`` for an RGB image in [0, 1]."""
    nb = dilated_neighbours(image, dilations)
    down = torch.cat([nb[..., 1:, :], nb[..., -1:, :]], dim=-2)
    right = torch.cat([nb[..., :, 1:], nb[..., :, -1:]], dim=-1)
    grad = ((nb - down) ** 2 + (nb - right) ** 2).mean(dim=1, keepdim=True)
    dist = (nb - image.unsqueeze(2)).abs()
    std = nb.std(dim=2, keepdim=True)
    aff = (-((dist / (std + 1e-8)) * 4) ** 2).mean(dim=1, keepdim=True)
    return torch.softmax(aff, dim=2) - w2 * torch.softmax(grad, dim=2)


def propagate(masks: torch.Tensor, affinity: torch.Tensor, dilations: Sequence[int], num_iter: int) -> torch.Tensor:
    """``num_iter`` times: each pixel becomes the affinity-weighted sum of its neighbours (accumulated
    shift by shift rather than materialising the ``P``-fold neighbour stack)."""
    h, w = masks.shape[-2:]
    weights = affinity[:, 0]  # B x P x H x W
    for _ in range(num_iter):
        acc = torch.zeros_like(masks)
        j = 0
        for d in dilations:
            p = F.pad(masks, [d] * 4, mode="replicate")
            for dy, dx in _OFFSETS:
                acc.addcmul_(p[..., d + dy * d: d + dy * d + h, d + dx * d: d + dx * d + w], weights[:, j:j + 1])
                j += 1
        masks = acc
    return masks


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
    width = int(keys.sum(1).max())
    # class ids per image, valid ones first in ascending order, padded with a repeat of the last
    order = torch.argsort((~keys).to(torch.int8), dim=1, stable=True)[:, :width]
    slot_ok = torch.arange(width, device=keys.device)[None] < keys.sum(1, keepdim=True)

    results = []
    for bg in (bg_high, bg_low):
        cams = torch.cat([torch.full_like(fg_cams[:, :1], bg), fg_cams], dim=1)
        cams = F.interpolate(cams, size=(hs, ws), mode="bilinear", align_corners=False)
        picked = torch.gather(cams, 1, order[:, :, None, None].expand(-1, -1, hs, ws))
        picked = picked.masked_fill(~slot_ok[:, :, None, None], float("-inf"))
        results.append(torch.softmax(picked, dim=1))
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
