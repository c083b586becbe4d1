"""Segments for pixel-to-segment contrastive learning (SegSort / SPML), as batched tensor code.

Why this module exists: SPML groups each image's pixel embeddings into segments by spherical
(von Mises-Fisher) k-means started from a regular grid, then intersects the clusters with the
over-segmentation and the weak labels. The reference (twke18/SPML ``spml/utils/segsort/common.py``)
loops over images and segments in Python; here every step runs on the whole batch at once:
k-means on ``B x P x D`` tensors with ``bmm`` / ``scatter_add``, segments from one ``unique`` over a
composite key. Results equal the reference's (same grid, same initial labels, same tie breaking,
same segment order: sorted by image, cluster, label).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def l2_normalize(x: Tensor, dim: int = -1, eps: float = 1e-12) -> Tensor:
    """Unit-normalise along ``dim``; all-zero vectors stay zero (the reference's rule)."""
    norm = x.norm(dim=dim, keepdim=True)
    return x / torch.where(norm >= eps, norm, torch.full_like(norm, eps))


def grid_labels(num_clusters: Sequence[int], size: Tuple[int, int], device=None) -> Tensor:
    """Initial k-means labels: a ``ny x nx`` grid over ``h x w`` (``linspace(...).round()`` cells).

    Labels are renumbered consecutively in the order of ``y + ny * x`` (the reference's numbering).
    """
    h, w = size
    ys = torch.linspace(0, num_clusters[0] - 1, h, device=device).round().long()
    xs = torch.linspace(0, num_clusters[1] - 1, w, device=device).round().long()
    labels = ys.view(-1, 1) + (ys.max() + 1) * xs.view(1, -1)
    _, labels = torch.unique(labels.view(-1), return_inverse=True)
    return labels.view(h, w)


def location_features(size: Tuple[int, int], device=None, dtype=torch.float32) -> Tensor:
    """``h x w x 2`` (y, x) coordinates in ``[-0.5, 0.5]``, appended to embeddings before k-means."""
    h, w = size
    ys = torch.linspace(0, 1, h, device=device, dtype=dtype) - 0.5
    xs = torch.linspace(0, 1, w, device=device, dtype=dtype) - 0.5
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([yy, xx], dim=-1)


def smoothed_colors(image: Tensor, size: Tuple[int, int], ksize: int = 5) -> Tensor:
    """DensePose colour features: the reference's 5x5 'Gaussian' (distance-weighted, no padding)
    smoothing, bilinear resize to ``size``, then per-image centring and max-abs scaling.

    Returns ``B x h x w x 3``.
    """
    c = image.shape[1]
    r = torch.arange(ksize, dtype=image.dtype, device=image.device) - ksize // 2
    weight = (r[None, :] ** 2 + r[:, None] ** 2).sqrt()
    weight = (weight / weight.sum()).expand(c, 1, ksize, ksize)
    x = F.conv2d(image, weight, groups=c)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    colors = x.permute(0, 2, 3, 1)
    b = colors.shape[0]
    flat = colors.reshape(b, -1, c)
    flat = flat - flat.mean(dim=1, keepdim=True)
    flat = flat / flat.abs().amax(dim=1, keepdim=True)
    return flat.view_as(colors)


def segment_mean_directions(x: Tensor, index: Tensor, num: int) -> Tensor:
    """Prototype of each segment: the unit-normalised sum of its members (``N x D`` -> ``num x D``)."""
    out = x.new_zeros(num, x.shape[-1])
    out.index_add_(0, index, x)
    return l2_normalize(out)


def spherical_kmeans(features: Tensor, init: Tensor, num_clusters: int, valid: Tensor,
                     iterations: int = 10) -> Tensor:
    """Batched vMF k-means: ``features`` B x P x D (unit rows), ``init`` P (shared) or B x P labels.

    Each image is clustered on its own; pixels with ``valid`` False neither vote for prototypes
    nor matter afterwards (their labels are returned but meaningless). Empty clusters keep a zero
    prototype, as in the reference, and ties go to the lowest cluster index (``argmax``).
    """
    b, p, d = features.shape
    labels = init.expand(b, p) if init.dim() == 1 else init
    weights = valid.to(features.dtype).unsqueeze(-1)
    masked = features * weights
    for _ in range(iterations):
        protos = features.new_zeros(b, num_clusters, d)
        protos.scatter_add_(1, labels.unsqueeze(-1).expand(b, p, d), masked)
        protos = l2_normalize(protos)
        labels = torch.bmm(features, protos.transpose(1, 2)).argmax(dim=-1)
    return labels


@dataclass
class Segments:
    """What the losses need about the valid pixels of a batch and their segments.

    Pixel tensors are flat over the valid pixels of the batch (image-major, row-major order);
    segment tensors have one row per segment, sorted by (image, k-means cluster, label).
    """

    embedding: Tensor          # N x D unit pixel embeddings
    embedding_loc: Tensor      # N x D' unit [embedding, location(, colour)] features
    pixel_segment: Tensor      # N segment index of each pixel
    pixel_batch: Tensor        # N image index
    pixel_label: Tensor        # N semantic label (num_classes = unlabelled)
    pixel_region: Tensor       # N over-segmentation id
    prototype: Tensor          # M x D
    prototype_loc: Tensor      # M x D'
    segment_batch: Tensor      # M
    segment_label: Tensor      # M
    segment_region: Tensor     # M
    valid_index: Tensor        # N flat indices into B*h*w of the valid pixels


def build_segments(embedding: Tensor, labels: Tensor, regions: Tensor, valid: Tensor,
                   num_clusters: Sequence[int], iterations: int,
                   local: Optional[Tensor] = None, loc_embedding_scale: Optional[float] = None) -> Segments:
    """Spherical k-means per image, then segments = cluster x semantic label x over-segment region.

    ``embedding`` B x D x h x w (raw network output), ``labels`` / ``regions`` / ``valid`` B x h x w
    at the same size, ``local`` B x h x w x L extra features (default: location only).
    ``loc_embedding_scale`` (DensePose: 0.1) rebuilds the returned location features from the
    scaled embedding after clustering, as the reference's DensePose model does.
    """
    b, d, h, w = embedding.shape
    device = embedding.device
    emb = l2_normalize(embedding.permute(0, 2, 3, 1).reshape(b, h * w, d))
    if local is None:
        local = location_features((h, w), device, emb.dtype).expand(b, h, w, 2)
    local = local.reshape(b, h * w, -1).to(emb.dtype)
    emb_loc = l2_normalize(torch.cat([emb, local], dim=-1))
    init = grid_labels(num_clusters, (h, w), device).view(-1)
    k = int(init.max()) + 1
    valid_flat = valid.reshape(b, h * w)
    if iterations > 0:
        clusters = spherical_kmeans(emb_loc, init, k, valid_flat, iterations)
    else:
        clusters = init.expand(b, h * w)

    idx = valid_flat.reshape(-1).nonzero().squeeze(1)
    pix_batch = idx // (h * w)
    pix_cluster = clusters.reshape(-1)[idx]
    pix_label = labels.reshape(-1)[idx].long()
    pix_region = regions.reshape(-1)[idx].long()
    # one composite key per (image, cluster, label, region): its sorted order is the reference's
    n_regions = int(pix_region.max()) + 1 if pix_region.numel() else 1
    n_labels = int(pix_label.max()) + 1 if pix_label.numel() else 1
    key = ((pix_batch * k + pix_cluster) * n_labels + pix_label) * n_regions + pix_region
    seg_key, pix_segment = torch.unique(key, return_inverse=True)
    m = seg_key.numel()
    seg_region = seg_key % n_regions
    seg_label = (seg_key // n_regions) % n_labels
    seg_batch = seg_key // (n_regions * n_labels * k)

    emb_valid = emb.reshape(-1, d)[idx]
    emb_loc_valid = emb_loc.reshape(b * h * w, -1)[idx]
    if loc_embedding_scale is not None:
        emb_loc_valid = l2_normalize(torch.cat([emb_valid * loc_embedding_scale,
                                                local.reshape(b * h * w, -1)[idx]], dim=-1))
    return Segments(
        embedding=emb_valid, embedding_loc=emb_loc_valid, pixel_segment=pix_segment,
        pixel_batch=pix_batch, pixel_label=pix_label, pixel_region=pix_region,
        prototype=segment_mean_directions(emb_valid, pix_segment, m),
        prototype_loc=segment_mean_directions(emb_loc_valid, pix_segment, m),
        segment_batch=seg_batch, segment_label=seg_label, segment_region=seg_region, valid_index=idx)
