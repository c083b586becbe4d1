"""WS-FCN's loss terms (ChunyanWang1/ws-fcn@73927f5 ``models/stage_net.py``, after visinf/1-stage-wseg).

* :func:`gwp_focal_scores`: class scores from normalised global weighted pooling plus the focal term
  (``SoftMaxAE.forward``: ``cls_1 + cls_2``), trained with multi-label soft margin;
* :func:`pseudo_masks`: PAMR-refined masks thresholded per image and class (``pseudo_gtmask``);
* :func:`balanced_mask_ce`: the class-balanced cross-entropy on them (``balanced_mask_loss_ce``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gwp_focal_scores(logits: torch.Tensor, focal_p: float = 3.0, focal_lambda: float = 0.01) -> torch.Tensor:
    """``B x C`` foreground class scores from ``B x (1+C) x h x w`` logits (background first).

    nGWP: sum(logit * m) / (1 + sum(m)) with m the softmax over classes; focal term
    (1 - mean m)^p * log(lambda + mean m)."""
    b, k = logits.shape[:2]
    x = logits.reshape(b, k, -1)
    m = torch.softmax(x, dim=1)
    gwp = (x * m).sum(-1) / (1.0 + m.sum(-1))
    mean = m.mean(-1)
    focal = (1 - mean).pow(focal_p) * torch.log(focal_lambda + mean)
    return (gwp + focal)[:, 1:]


@torch.no_grad()
def pseudo_masks(masks: torch.Tensor, bg_factor: float = 0.7, fg_factor: float = 0.6,
                 cutoff_low: float = 0.2) -> torch.Tensor:
    """``B x (1+C) x H x W`` binary masks: a pixel belongs to a class when its score exceeds
    max(cutoff_low, factor x the class's maximum); pixels claimed by more than one class are dropped."""
    b, k, h, w = masks.shape
    flat = masks.reshape(b, k, -1)
    peak = flat.max(-1, keepdim=True).values
    factor = torch.full_like(peak, fg_factor)
    factor[:, :1] = bg_factor
    cut = (peak * factor).clamp_min(cutoff_low)
    gt = (flat > cut).to(masks.dtype)
    gt = gt * (gt.sum(1, keepdim=True) <= 1).to(masks.dtype)
    return gt.view(b, k, h, w)


def balanced_mask_ce(logits: torch.Tensor, pseudo: torch.Tensor, fg_label: torch.Tensor,
                     ignore_index: int = 255) -> torch.Tensor:
    """Per-image class-balanced CE of ``logits`` (upsampled, align_corners) against binary ``pseudo`` masks.

    Each pixel's loss is weighted by (N - N_c) / (1 + N) of its class c; an image counts only when its pseudo
    mask holds exactly its labelled classes + background. Returns ``B`` losses (mean over pixels)."""
    logits = F.interpolate(logits, size=pseudo.shape[-2:], mode="bilinear", align_corners=True)
    target = pseudo.argmax(1)
    assigned = pseudo.sum(1) > 0
    target = target.masked_fill(~assigned, ignore_index)
    b, k = pseudo.shape[:2]
    per_class = pseudo.reshape(b, k, -1).sum(-1)
    total = per_class.sum(-1, keepdim=True)
    class_weight = (total - per_class) / (1 + total)
    pixel_weight = (pseudo * class_weight[:, :, None, None]).sum(1).reshape(b, -1)
    loss = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none").reshape(b, -1)
    wanted = fg_label.sum(-1).to(loss.dtype) + 1
    found = (per_class > 0).to(loss.dtype).sum(-1)
    return (wanted == found).to(loss.dtype) * (pixel_weight * loss).mean(-1)
