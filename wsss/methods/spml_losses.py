"""SPML's pixel-to-segment contrastive losses (Ke et al., ICLR 2021), batched.

All four relations use one form, SegSort's "segsort+" NCA loss: for pixel i with own segment
s(i), similarities ``e_ij = exp(kappa * <x_i, p_j>)`` to prototypes j,

    positive_i = sum_{j != s(i), j same as i} e_ij      (or e_{i s(i)} if that sum is 0)
    negative_i = sum_{j not same as i} e_ij
    loss_i     = -log(positive_i / (positive_i + negative_i))

and the mean over pixels. What "same" means makes the relation:

* semantic annotation: same weak label (labelled pixels vs labelled segments, memory included);
* semantic co-occurrence: image tags overlap (all pixels vs all segments, memory included);
* low-level image similarity: same over-segmentation region, within the pixel's own image,
  on [embedding, location] features; averaged per image, then over images;
* feature affinity (DensePose): tags propagated from the nearest labelled segment.

Source: twke18/SPML ``spml/utils/segsort/loss.py`` and ``spml/models/predictions/segsort_softmax*.py``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def _nca(sim: Tensor, own: Tensor, same: Tensor, allowed: Optional[Tensor] = None) -> Tensor:
    """Per-pixel -log(pos / (pos + neg)) from exp-similarities ``sim`` (N x M), ``same`` (bool N x M)."""
    if allowed is not None:
        sim = sim * allowed
    own_sim = sim.gather(1, own.view(-1, 1))
    same_f = same.to(sim.dtype)
    pos = (sim * same_f).sum(1, keepdim=True) - own_sim
    pos = torch.where(pos > 0, pos, own_sim)
    diff = sim * (1.0 - same_f)
    if allowed is not None:
        diff = diff * allowed
    neg = diff.sum(1, keepdim=True)
    return -(pos / (neg + pos)).log().squeeze(1)


def segsort_loss(x: Tensor, own: Tensor, labels: Tensor, prototypes: Tensor, prototype_labels: Tensor,
                 concentration: float) -> Tensor:
    """Single-label relation: pixels and prototypes are "same" when their labels are equal."""
    if x.shape[0] == 0 or prototypes.shape[0] == 0:
        return x.sum() * 0.0
    sim = torch.mm(x.float(), prototypes.float().t()).mul(concentration).exp()
    same = labels.view(-1, 1) == prototype_labels.view(1, -1)
    return _nca(sim, own, same).mean()


def set_segsort_loss(x: Tensor, own: Tensor, tags: Tensor, prototypes: Tensor, prototype_tags: Tensor,
                     concentration: float) -> Tensor:
    """Multi-label relation: "same" when the multi-hot tag sets share a class."""
    if x.shape[0] == 0 or prototypes.shape[0] == 0:
        return x.sum() * 0.0
    sim = torch.mm(x.float(), prototypes.float().t()).mul(concentration).exp()
    same = torch.mm(tags.float(), prototype_tags.float().t()) > 0
    return _nca(sim, own, same).mean()


def image_similarity_loss(x_loc: Tensor, pixel_segment: Tensor, pixel_batch: Tensor, prototype_loc: Tensor,
                          segment_batch: Tensor, segment_region: Tensor, concentration: float) -> Tensor:
    """Low-level image similarity: segments of the same over-segmentation region attract, per image.

    Equal to the reference's per-image loop (a loss per image, averaged over images) computed as
    one masked matrix: prototypes of other images are excluded from both sums.
    """
    if x_loc.shape[0] == 0:
        return x_loc.sum() * 0.0
    sim = torch.mm(x_loc.float(), prototype_loc.float().t()).mul(concentration).exp()
    allowed = (pixel_batch.view(-1, 1) == segment_batch.view(1, -1)).to(sim.dtype)
    pixel_region = segment_region[pixel_segment]
    same = pixel_region.view(-1, 1) == segment_region.view(1, -1)
    per_pixel = _nca(sim, pixel_segment, same, allowed)
    images, inverse = torch.unique(pixel_batch, return_inverse=True)
    total = per_pixel.new_zeros(images.numel()).index_add_(0, inverse, per_pixel)
    count = per_pixel.new_zeros(images.numel()).index_add_(0, inverse, torch.ones_like(per_pixel))
    return (total / count).mean()


def nearest_labelled_tags(prototype_loc: Tensor, segment_label: Tensor, segment_batch: Tensor,
                          num_classes: int, threshold: float = 0.95) -> Tensor:
    """Feature-affinity tags: each segment takes the label of its nearest labelled segment of the
    same image (cosine on [0.1 x embedding, location, colour]) when the similarity reaches
    ``threshold``; segments left without a tag get all classes (they then repel nothing).

    Reference: ``gather_multiset_labels_per_batch_by_nearest_neighbor`` with top_k=1.
    """
    m = prototype_loc.shape[0]
    dists = torch.mm(prototype_loc, prototype_loc.t())
    ok = (segment_batch.view(-1, 1) == segment_batch.view(1, -1)) & (segment_label < num_classes).view(1, -1)
    dists = torch.where(ok, dists, dists.min() - 1)
    best, arg = dists.max(dim=1)
    label = segment_label[arg]
    label = torch.where(best < threshold, torch.full_like(label, num_classes), label)
    tags = torch.zeros(m, num_classes + 1, dtype=torch.long, device=prototype_loc.device)
    tags.scatter_(1, label.view(-1, 1), 1)
    tags = tags[:, :num_classes]
    empty = tags.sum(1, keepdim=True) == 0
    return torch.where(empty, torch.ones_like(tags), tags)
