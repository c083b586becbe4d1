"""Generic operations on class activation maps, shared by every method and by post-processing.

One place for what the seed repos each re-implement: max and min-max normalisation, label restriction and a
label-restricted softmax, and PAMR-style propagation of scores over colour affinities (AFA / ToCo ``PAR``, RTC
``VARM``). Methods import these instead of each other's helpers. Tensors are ``B x K x H x W``.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

# kernel positions (row, col) of the reference PAMR's 8 shift kernels, in their order
_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


# ----- normalisation ---------------------------------------------------------------------------------
def max_normalize(cam: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-image, per-class division by the spatial maximum (SEAM / PSA convention)."""
    cam = F.relu(cam)
    peak = cam.flatten(-2).max(dim=-1).values[..., None, None]
    return cam / (peak + eps)


def minmax_normalize(cam: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-map min-max normalisation of ReLU'd CAMs (wseg / RTC ``tool/visualization.py`` ``max_norm``)."""
    cam = F.relu(cam)
    flat = cam.flatten(2)
    hi = flat.max(-1).values[..., None, None]
    lo = flat.min(-1).values[..., None, None]
    return F.relu(cam - lo - eps) / (hi - lo + eps)


def probability_normalize(scores: torch.Tensor) -> torch.Tensor:
    """Summed probabilities (over scales / flips) back to probabilities: divide by the class sum."""
    return scores / scores.sum(dim=1, keepdim=True).clamp_min(1e-12)


# ----- image labels ----------------------------------------------------------------------------------
def restrict_to_labels(scores: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Drop foreground classes absent from the image-level label (keeps background, channel 0)."""
    keep = torch.cat([torch.ones_like(cls[:, :1]), cls], dim=1) > 0.5
    return scores.masked_fill(~keep[:, :, None, None], float("-inf"))


def label_slots(keys: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each image's kept class ids gathered to a common width: ``order`` (``B x W`` ids, kept ones first in
    ascending order, then repeats) and ``slot_ok`` (``B x W``, False on the padding slots). ``keys``: ``B x K`` bool."""
    width = int(keys.sum(1).max())
    order = torch.argsort((~keys).to(torch.int8), dim=1, stable=True)[:, :width]
    slot_ok = torch.arange(width, device=keys.device)[None] < keys.sum(1, keepdim=True)
    return order, slot_ok


def restricted_softmax(scores: torch.Tensor, order: torch.Tensor, slot_ok: torch.Tensor) -> torch.Tensor:
    """Softmax over each image's kept classes only (:func:`label_slots`); padding slots get probability 0."""
    h, w = scores.shape[-2:]
    picked = torch.gather(scores, 1, order[:, :, None, None].expand(-1, -1, h, w))
    return torch.softmax(picked.masked_fill(~slot_ok[:, :, None, None], float("-inf")), dim=1)


# ----- PAMR: propagation over local colour affinity --------------------------------------------------
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
    """Neighbour weights ``B x 1 x P x H x W`` for an RGB image in [0, 1] (RTC ``VARM``: colour affinity minus
    ``w2`` x a softmax of the local gradient)."""
    nb = dilated_neighbours(image, dilations)
    down = torch.cat([nb[..., 1:, :], nb[..., -1:, :]], dim=-2)
    right = torch.cat([nb[..., :, 1:], nb[..., :, -1:]], dim=-1)
    grad = ((nb - down) ** 2 + (nb - right) ** 2).mean(dim=1, keepdim=True)
    dist = (nb - image.unsqueeze(2)).abs()
    std = nb.std(dim=2, keepdim=True)
    aff = (-((dist / (std + 1e-8)) * 4) ** 2).mean(dim=1, keepdim=True)
    return torch.softmax(aff, dim=2) - w2 * torch.softmax(grad, dim=2)


def pamr_affinity(image: torch.Tensor, dilations: Sequence[int], std_scale: float = 0.1) -> torch.Tensor:
    """Neighbour weights ``B x 1 x P x H x W`` of 1-stage-wseg's PAMR (``models/mods/pamr.py``, used by WS-FCN):
    softmax over neighbours of -|x - x_n| / (1e-8 + ``std_scale`` x local std), averaged over channels; the std
    is taken over the centre and its 8 neighbours at every dilation (unbiased)."""
    nb = dilated_neighbours(image, dilations)
    centre = image.unsqueeze(2)
    taps = torch.cat([nb, centre.expand(-1, -1, len(dilations), -1, -1)], dim=2)
    std = taps.std(dim=2, keepdim=True)
    aff = -(nb - centre).abs() / (1e-8 + std_scale * std)
    return torch.softmax(aff.mean(dim=1, keepdim=True), dim=2)


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
