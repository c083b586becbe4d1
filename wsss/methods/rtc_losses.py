"""RTC's training losses and pseudo-label helpers as plain functions (ChunyanWang1/RTC ``contrast_train.py``).

Each function states the reference lines it follows; ``docs/rtc.md`` lists the numbers and where the
code and the paper differ (the reference's ``max_norm`` is :func:`wsss.methods.cam_ops.minmax_normalize`).
Tensors: CAMs are ``B x (1+C) x H x W`` with background first, ``label`` is ``B x (1+C)`` with a leading 1
for background.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F


def max_onehot(cam: torch.Tensor) -> torch.Tensor:
    """Keep, per pixel, only the foreground channels equal to the foreground maximum (ties kept);
    background untouched. Out of place equivalent of the reference's in-place ``max_onehot``."""
    fg = cam[:, 1:]
    keep = fg == fg.max(dim=1, keepdim=True).values
    return torch.cat([cam[:, :1], fg * keep], dim=1)


def adaptive_min_pooling_loss(fg_cam: torch.Tensor) -> torch.Tensor:
    """Mean of the ReLU'd lowest quarter of the per-pixel class maximum (reference ``contrast_train.py:92``)."""
    n, _, h, w = fg_cam.shape
    k = h * w // 4
    low = torch.topk(fg_cam.max(dim=1).values.reshape(n, -1), k=k, dim=-1, largest=False).values
    return F.relu(low).sum() / (k * n)


def topk_abs_mean(a: torch.Tensor, b: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mean of the largest ``fraction`` of ``|a - b|`` per image (ECR / structure losses)."""
    diff = (a - b).abs().flatten(1)
    k = int(diff.shape[1] * fraction)
    return torch.topk(diff, k=k, dim=-1).values.mean()


def normalise_for_prototypes(cam: torch.Tensor, label: torch.Tensor, bg_threshold: float
                             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Reference ``normal()`` (``contrast_train.py:46``): min-max per map with the reference's exact
    arithmetic (values at the minimum become slightly negative), background set to ``bg_threshold``;
    pseudo label = argmax over label-masked scores."""
    cam = F.relu(cam)
    flat = cam.flatten(2)
    hi = flat.max(-1).values[..., None, None]
    lo = flat.min(-1).values[..., None, None]
    cam = cam.masked_fill(cam < lo + 1e-5, 0.0)
    cam = (cam - lo - 1e-5) / (hi - lo + 1e-5)
    cam = torch.cat([torch.full_like(cam[:, :1], bg_threshold), cam[:, 1:]], dim=1)
    pseudo = (cam * label[:, :, None, None]).argmax(dim=1)
    return cam, pseudo


@torch.no_grad()
def cross_view_prototypes(cam1: torch.Tensor, cam2: torch.Tensor, fea1: torch.Tensor, fea2: torch.Tensor,
                          label: torch.Tensor, top_divisor: int = 8):
    """Prototypes and compensated CAMs across the two views (``contrast_train.py:403-467``).

    ``cam*``: normalised CAMs ``N x K x h x w`` of both views at the same size; ``fea*``: projected
    features ``N x D x h x w``. Prototype ``k`` of view 1 is the score-weighted mean of view-2 features
    at view 1's top ``h*w // top_divisor`` pixels of class ``k`` over the whole batch (and vice versa).
    For classes present in the batch, each view's CAM gets a compensation term: attention of its
    *partner* view's features to those top features, applied to the top scores.
    Returns (prototypes1, prototypes2 L2-normalised ``K x D``, new_cam1, new_cam2).
    """
    n, k_cls, h, w = cam1.shape
    d = fea1.shape[1]
    k = max(1, h * w // top_divisor)  # reference: h*w//8 (>= 32 at its 16x16 size)
    f1 = fea1.permute(0, 2, 3, 1).reshape(-1, d)
    f2 = fea2.permute(0, 2, 3, 1).reshape(-1, d)
    present = label.sum(0) > 0

    def one_side(cam: torch.Tensor, fea_other: torch.Tensor):
        vals, idx = torch.topk(cam.transpose(0, 1).reshape(k_cls, -1), k=k, dim=-1)  # K x k
        top = fea_other[idx]  # K x k x D
        denom = vals.sum(-1, keepdim=True)
        proto = (vals.unsqueeze(-1) * top).sum(1) / torch.where(denom == 0, torch.full_like(denom, 1e-12), denom)
        att = torch.softmax(torch.einsum("pd,ckd->cpk", F.normalize(fea_other, dim=-1),
                                         F.normalize(top, dim=-1)), dim=-1)  # K x P x k
        comp = torch.einsum("cpk,ck->cp", att, vals).reshape(k_cls, n, h, w).transpose(0, 1)
        new_cam = cam + comp * present.to(cam.dtype)[None, :, None, None]
        return F.normalize(proto, dim=-1), new_cam

    proto1, new1 = one_side(cam1, f2)
    proto2, new2 = one_side(cam2, f1)
    return proto1, proto2, new1, new2


def prototype_nce(feat: torch.Tensor, prototypes: torch.Tensor, target: torch.Tensor,
                  temperature: float = 0.1) -> torch.Tensor:
    """``-log(exp(f.p+/t) / sum_k exp(f.p_k/t))`` averaged over pixels (``contrast_train.py:541``),
    written as a cross entropy (same value, no overflow). ``feat``: P x D normalised."""
    return F.cross_entropy(feat @ prototypes.t() / temperature, target)


def balanced_mask_ce(seg_logits: torch.Tensor, seg_label: torch.Tensor, fg_label: torch.Tensor,
                     ignore_index: int = 255) -> torch.Tensor:
    """Class-balanced CE of the segmentation branch (``balanced_mask_loss_ce``, ``contrast_train.py:60``).

    Each pixel's CE is weighted by (pixels of other classes) / (1 + labelled pixels); an image counts
    only when its pseudo mask holds exactly the image's classes plus background; the mean is over all
    pixels of the image (ignored ones contribute 0), then over the batch.
    """
    b, k = seg_logits.shape[:2]
    logits = F.interpolate(seg_logits, size=seg_label.shape[-2:], mode="bilinear", align_corners=True)
    onehot = F.one_hot(seg_label.clamp(max=k).long(), k + 1)[..., :k].permute(0, 3, 1, 2).to(logits.dtype)
    per_class = onehot.flatten(2).sum(-1)  # B x K
    total = per_class.sum(-1, keepdim=True)
    weight = (total - per_class) / (1 + total)
    pixel_weight = (onehot * weight[:, :, None, None]).sum(1).view(b, -1)
    ce = F.cross_entropy(logits, seg_label.long(), ignore_index=ignore_index, reduction="none").view(b, -1)
    wanted = fg_label.sum(-1).to(ce.dtype) + 1
    found = (per_class > 0).to(ce.dtype).sum(-1)
    batch_weight = (wanted == found).to(ce.dtype)
    return (batch_weight * (pixel_weight * ce).mean(-1)).mean()
