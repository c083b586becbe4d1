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


def _nca_from_sums(own: Tensor, same: Tensor, total: Tensor) -> Tensor:
    """Per-pixel -log(pos / (pos + neg)) from exp-similarity sums: own segment, all "same", all.

    "No other same segment" is decided with a relative tolerance (the sums come from matmuls, so
    ``same - own`` of a lone segment is rounding noise, not a positive)."""
    pos = same - own
    pos = torch.where(pos > 1e-5 * same, pos, own)
    neg = total - same
    return -(pos / (neg + pos)).log()


def _similarities(x: Tensor, prototypes: Tensor, concentration: float) -> Tensor:
    return torch.mm(x.float() * concentration, prototypes.float().t()).exp()


def _own_similarity(x: Tensor, prototypes: Tensor, own: Tensor, concentration: float) -> Tensor:
    """exp(kappa <x_i, p_own(i)>) without touching the N x M matrix (cheap in backward too)."""
    return ((x.float() * prototypes.float()[own]).sum(1) * concentration).exp()


def segsort_loss(x: Tensor, own: Tensor, labels: Tensor, prototypes: Tensor, prototype_labels: Tensor,
                 concentration: float, cosine: Optional[Tensor] = None) -> Tensor:
    """Single-label relation: pixels and prototypes are "same" when their labels are equal.

    ``cosine`` (optional): the precomputed ``x @ prototypes.T``, shared between relations.

    The N x M similarity matrix is reduced per label with one matmul (sim @ one-hot), so no
    N x M mask is ever built.
    """
    if x.shape[0] == 0 or prototypes.shape[0] == 0:
        return x.sum() * 0.0
    sim = _similarities(x, prototypes, concentration) if cosine is None else (cosine * concentration).exp()
    values, proto_idx = torch.unique(prototype_labels, return_inverse=True)
    onehot = torch.zeros(prototypes.shape[0], values.numel(), dtype=sim.dtype, device=sim.device)
    onehot[torch.arange(prototypes.shape[0], device=sim.device), proto_idx] = 1.0
    per_label = sim @ onehot                                       # N x L
    pos_idx = torch.searchsorted(values, labels).clamp_max(values.numel() - 1)
    same = per_label.gather(1, pos_idx.view(-1, 1)).squeeze(1)
    same = torch.where(values[pos_idx] == labels, same, torch.zeros_like(same))
    own_sim = _own_similarity(x, prototypes, own, concentration)
    return _nca_from_sums(own_sim, same, per_label.sum(1)).mean()


def set_segsort_loss(x: Tensor, own: Tensor, tags: Tensor, prototypes: Tensor, prototype_tags: Tensor,
                     concentration: float, cosine: Optional[Tensor] = None) -> Tensor:
    """Multi-label relation: "same" when the multi-hot tag sets share a class.

    Tag sets repeat (one per image or per class), so similarities are summed per distinct
    prototype tag set with one matmul and combined through the small set-overlap table.
    """
    if x.shape[0] == 0 or prototypes.shape[0] == 0:
        return x.sum() * 0.0
    sim = _similarities(x, prototypes, concentration) if cosine is None else (cosine * concentration).exp()
    proto_sets, proto_idx = torch.unique(prototype_tags.float(), dim=0, return_inverse=True)
    pix_sets, pix_idx = torch.unique(tags.float(), dim=0, return_inverse=True)
    onehot = torch.zeros(prototypes.shape[0], proto_sets.shape[0], dtype=sim.dtype, device=sim.device)
    onehot[torch.arange(prototypes.shape[0], device=sim.device), proto_idx] = 1.0
    per_set = sim @ onehot                                         # N x Q
    overlap = (pix_sets @ proto_sets.t() > 0).to(sim.dtype)       # R x Q
    same = (per_set * overlap[pix_idx]).sum(1)
    own_sim = _own_similarity(x, prototypes, own, concentration)
    return _nca_from_sums(own_sim, same, per_set.sum(1)).mean()


def _pad_groups(values: Tensor, group: Tensor, num_groups: int, fill: float = 0.0):
    """Rows sorted by ``group`` -> ``G x max_count x ...`` padded tensor, the validity mask and the
    position of each row inside its group."""
    counts = torch.bincount(group, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(group.numel(), device=group.device) - starts[group]
    width = int(counts.max()) if counts.numel() else 0
    out = values.new_full((num_groups, width) + tuple(values.shape[1:]), fill)
    out[group, pos] = values
    mask = torch.zeros(num_groups, width, dtype=torch.bool, device=group.device)
    mask[group, pos] = True
    return out, mask, pos


def image_similarity_loss(x_loc: Tensor, pixel_segment: Tensor, pixel_batch: Tensor, prototype_loc: Tensor,
                          segment_batch: Tensor, segment_region: Tensor, concentration: float) -> Tensor:
    """Low-level image similarity: segments of the same over-segmentation region attract, per image.

    Equal to the reference's per-image loop (a loss per image, averaged over images), computed as
    one padded ``B x pixels x segments`` batch: pixels only meet their own image's segments.
    Pixels and segments must be sorted by image (as :func:`build_segments` returns them).
    """
    if x_loc.shape[0] == 0:
        return x_loc.sum() * 0.0
    images, pix_img = torch.unique(pixel_batch, return_inverse=True)
    seg_img = torch.searchsorted(images, segment_batch)
    keep = (seg_img < images.numel())
    keep &= images[seg_img.clamp_max(images.numel() - 1)] == segment_batch
    g = images.numel()
    protos, proto_mask, _ = _pad_groups(prototype_loc[keep].float(), seg_img[keep], g)
    regions, _, _ = _pad_groups(segment_region[keep], seg_img[keep], g, fill=-1)
    first_seg = torch.full((g,), 0, dtype=torch.long, device=x_loc.device)
    first_seg.scatter_reduce_(0, seg_img[keep], torch.nonzero(keep).squeeze(1), reduce="amin", include_self=False)
    pix, pix_mask, _ = _pad_groups(x_loc.float(), pix_img, g)
    own, _, _ = _pad_groups(pixel_segment - first_seg[pix_img], pix_img, g)
    pix_region, _, _ = _pad_groups(segment_region[pixel_segment], pix_img, g, fill=-2)
    sim = torch.bmm(pix, protos.transpose(1, 2)).mul(concentration).exp() * proto_mask[:, None, :]
    same = (pix_region[:, :, None] == regions[:, None, :]).to(sim.dtype)
    same_sum = (sim * same).sum(-1)
    total = sim.sum(-1)
    own_sim = sim.gather(2, own.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    per_pixel = _nca_from_sums(own_sim, same_sum, total)
    per_pixel = torch.where(pix_mask, per_pixel, torch.zeros_like(per_pixel))
    per_image = per_pixel.sum(1) / pix_mask.sum(1)
    return per_image.mean()


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
