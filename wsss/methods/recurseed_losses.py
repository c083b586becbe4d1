"""RecurSeed + EdgePredictMix training, **reconstructed**: the authors released no training code.

Structure from the authors' overview figure (OFRIN/RecurSeed_and_EdgePredictMix@df538e2
``resources/Overview.jpg``; ``shared/research/recurseed_training.md`` §2.1), SCG from their first commit
(``4fbc05c1:core/inferences.py:31-186``), the rest guessed; every setting's tag is in ``conf/method/recurseed.yaml``
and ``docs/recurseed.md``. The graph (``M`` = maps, arrows = who supervises whom):

* ``L_cls``: multilabel soft margin on the GAP of the CAM;
* RecurSeed, without gradient: ``CAM_n = ReLU(CAM)/max`` -> :func:`scg` over backbone features -> ``M_scg`` ->
  PAMR -> ``M_rs``; ``L_rec = |CAM_n - M_rs|`` on the image's classes (CAM trained towards its own refined seed);
  :func:`certain_filter` (``M_rs`` -> ``M_seg``: background / class / 255) -> ``L_seg`` on the decoder;
* EdgePredictMix (from ``epm_start_epoch``), without gradient: decoder softmax -> PAMR -> :func:`edge_band` ->
  ``M_ep`` (hard labels, 255 on the band of large neighbour differences) -> :func:`paste` of image ``i``'s chosen
  classes onto image ``i+1``, the same paste applied to ``M_seg`` and ``M_rs`` -> ``L^mix_seg``, ``L^mix_rec``
  on the mixed batch. No mixed classification loss (the EPM figure draws none).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .cam_ops import dilated_neighbours, propagate

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TrainingConfig:
    """``method.training``; the source tag of every value is in ``conf/method/recurseed.yaml``."""

    scg: Mapping = field(default_factory=lambda: {"first_th": 0.5, "second_th": 0.1, "foreground_th": 0.3,
                                                  "background_th": 0.05})
    scg_levels: Optional[Sequence[str]] = None       # backbone levels feeding SCG (None: all)
    seed_stride: int = 8                             # grid of SCG / M_rs (C3 of RSEPM)
    pamr: Mapping = field(default_factory=lambda: {"num_iter": 10, "dilations": [1, 2, 4, 8, 12, 24]})
    certain: Mapping = field(default_factory=lambda: {"certain": 0.55, "uncertain": 0.10})
    edge_threshold: float = 0.3
    epm_start_epoch: int = 5
    loss_weights: Mapping = field(default_factory=lambda: {"cls": 1.0, "rec": 1.0, "seg": 1.0, "mix_seg": 1.0,
                                                           "mix_rec": 1.0})

    @classmethod
    def from_config(cls, cfg: Optional[Mapping]) -> "TrainingConfig":
        cfg = dict(cfg or {})
        unknown = set(cfg) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"method.training: unknown keys {sorted(unknown)}; known: "
                             f"{sorted(f.name for f in fields(cls))}")
        return cls(**{k: (dict(v) if isinstance(v, Mapping) else v) for k, v in cfg.items()})


# ----- SCG (first commit core/inferences.py) ---------------------------------------------------------
def _column_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """``SCG.normalize(mode='plus', dim=1)``: each column of ``B x N x N`` sums to one."""
    return x / (x.sum(dim=1, keepdim=True) + eps)


def _minmax(x: torch.Tensor, dim, eps: float = 1e-10) -> torch.Tensor:
    lo, hi = x.amin(dim=dim, keepdim=True), x.amax(dim=dim, keepdim=True)
    return (x - lo) / (hi - lo + eps)


def self_correlation(feature: torch.Tensor, first_th: float, second_th: float) -> torch.Tensor:
    """``B x C x h x w`` -> ``B x N x N`` (N = hw) higher-order self-correlation ``HSC`` of one feature map:
    first order ReLU(cosine) cut at ``first_th``; second order (diagonal removed) squared, cut at
    ``second_th / N``; their maximum, column-normalised (``SCG.generate_SC`` / ``get_HSC``)."""
    b, c, h, w = feature.shape
    n = h * w
    f = feature.flatten(2).transpose(1, 2)
    f = f / (f.norm(dim=2, keepdim=True) + 1e-10)
    sc = F.relu(f @ f.transpose(1, 2))
    if first_th > 0:
        sc = sc.masked_fill(sc < first_th, 0)
    sc1 = _column_normalize(sc)
    sc = sc.clone()
    sc[:, torch.arange(n), torch.arange(n)] = 0
    sc = _column_normalize(sc)
    sc2 = _column_normalize(sc @ sc)
    if second_th > 0:
        sc2 = sc2.masked_fill(sc2 < second_th / n, 0)
    return _column_normalize(torch.maximum(sc1, sc2))


def scg(cams: torch.Tensor, features: Sequence[torch.Tensor], first_th: float = 0.5, second_th: float = 0.1,
        foreground_th: float = 0.3, background_th: float = 0.05) -> torch.Tensor:
    """Self-correlation map generation: ``cams`` (``B x K x h x w``, max-normalised to [0, 1]) and features at
    the same ``h x w`` -> ``B x K x h x w`` maps in [0, 1]. Per class: the summed (column min-max normalised)
    correlations with the class's confident pixels (``>= foreground_th``) minus those with its background
    pixels (``<= background_th``), each min-max normalised, ReLU, min-max (``SCG.generate_SCM``)."""
    b, k, h, w = cams.shape
    hsc = sum(self_correlation(f, first_th, second_th) for f in features)
    hsc = _minmax(hsc, dim=1)                         # each column min-max over rows
    flat = cams.flatten(2).transpose(1, 2)            # B x N x K

    def side(sel: torch.Tensor) -> torch.Tensor:
        maps = (hsc @ sel.float()).transpose(1, 2)    # B x K x N: sum over the selected columns
        maps = _minmax(maps, dim=2)
        return maps * sel.any(dim=1)[..., None]       # no selected pixel: zeros

    scm = F.relu(side(flat >= foreground_th) - side(flat <= background_th))
    return _minmax(scm, dim=2).view(b, k, h, w)


# ----- PAMR (1-stage-wseg's, ported in core/refinements/pamr.py) ------------------------------------
def pamr(image: torch.Tensor, masks: torch.Tensor, num_iter: int = 10, dilations: Sequence[int] = (1,),
         sigma: float = 0.1) -> torch.Tensor:
    """Propagate ``masks`` over the colour affinity of ``image`` (same ``h x w``): softmax over the 8 dilated
    neighbours of ``-|I(x) - I(y)| / (sigma * local std)``, averaged over channels."""
    nb = dilated_neighbours(image, dilations)                       # B x 3 x P x h x w
    std = torch.cat([nb, image.unsqueeze(2)], dim=2).std(dim=2, keepdim=True)
    aff = (-(nb - image.unsqueeze(2)).abs() / (1e-8 + sigma * std)).mean(dim=1, keepdim=True)
    return propagate(masks, torch.softmax(aff, dim=2), dilations, num_iter)


# ----- certain filter, edge band, paste --------------------------------------------------------------
def certain_filter(seeds: torch.Tensor, keys: torch.Tensor, certain: float = 0.55,
                   uncertain: float = 0.10) -> torch.Tensor:
    """``B x K x h x w`` seeds in [0, 1] -> ``B x h x w`` labels: background where the image's best class is
    below ``uncertain``, that class (1-based) where it reaches ``certain``, 255 in between (the tag's
    ``CF(c=0.55, u=0.10)``; the reading of the two numbers is a guess)."""
    masked = seeds.masked_fill(~keys.bool()[:, :, None, None], -1.0)
    top, arg = masked.max(dim=1)
    labels = torch.full_like(arg, 255)
    labels[top < uncertain] = 0
    sure = top >= certain
    labels[sure] = arg[sure] + 1
    return labels


def edge_band(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """``B x (1+K) x h x w`` probabilities -> hard labels with 255 where the winning class's probability
    differs from a 3x3 neighbour's by more than ``threshold`` (the "probability difference between adjacent
    pixels" of the abstract; the rule itself is a guess)."""
    labels = probs.argmax(dim=1)
    win = probs.gather(1, labels[:, None])                          # B x 1 x h x w
    nb = dilated_neighbours(probs, (1,))                            # B x (1+K) x 8 x h x w
    win_nb = nb.gather(1, labels[:, None, None].expand(-1, 1, nb.shape[2], -1, -1))[:, 0]
    diff = (win - win_nb).abs().amax(dim=1)
    return labels.masked_fill(diff > threshold, 255)


def paste(images: torch.Tensor, labels: torch.Tensor, source_labels: torch.Tensor,
          chosen: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class-wise paste of image ``i`` onto image ``(i+1) mod B``: where ``source_labels[i]`` (hard, 1-based,
    255 = uncertain) is one of ``chosen[i]`` (``B x K`` bool, foreground classes). Returns the mixed images,
    the mixed labels (``source_labels[i]`` in the region, ``labels[i+1]`` elsewhere, 255 on the source's
    uncertain band next to the region) and the region ``B x h x w`` (bool, at the labels' size)."""
    b = images.shape[0]
    src = torch.arange(b, device=images.device)
    dst_of_src = (src + 1) % b                                       # image i goes onto image i+1
    order = torch.argsort(dst_of_src)                                # for target j: its source
    s_lab = source_labels[order]
    s_keys = chosen[order]
    fg = (s_lab > 0) & (s_lab != 255)
    cls = (s_lab - 1).clamp(0, s_keys.shape[1] - 1)
    region = fg & s_keys.gather(1, cls.flatten(1)).view_as(s_lab)
    near = F.max_pool2d(region[:, None].float(), 3, 1, 1)[:, 0] > 0
    band = near & (s_lab == 255)
    mixed = torch.where(region, s_lab, labels)
    mixed = mixed.masked_fill(band, 255)
    big = F.interpolate(region[:, None].float(), size=images.shape[-2:], mode="nearest")
    mixed_images = big * images[order] + (1 - big) * images
    return mixed_images, mixed, region


def paste_maps(maps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """The same paste on ``B x K x h x w`` maps (e.g. ``M_rs``): source maps inside the region (resized)."""
    b = maps.shape[0]
    order = torch.argsort((torch.arange(b, device=maps.device) + 1) % b)
    r = F.interpolate(region[:, None].float(), size=maps.shape[-2:], mode="nearest")
    return r * maps[order] + (1 - r) * maps


# ----- the losses ------------------------------------------------------------------------------------
def denormalize(image: torch.Tensor) -> torch.Tensor:
    mean = image.new_tensor(IMAGENET_MEAN)[None, :, None, None]
    std = image.new_tensor(IMAGENET_STD)[None, :, None, None]
    return image * std + mean


def max_norm(cam: torch.Tensor) -> torch.Tensor:
    """``CAM`` of the first commit: ReLU, division by the spatial maximum + 1e-5 (with gradient)."""
    cam = F.relu(cam)
    return cam / (F.adaptive_max_pool2d(cam, 1) + 1e-5)


def reconstruction_loss(cam_n: torch.Tensor, target: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """L1 between the normalised CAM and its refined seed on the image's classes (form guessed, PuzzleCAM)."""
    per = (cam_n - target).abs().mean(dim=(2, 3))
    return (per * keys).sum() / keys.sum().clamp_min(1.0)


def seed_grid(model, image: torch.Tensor, stride: int) -> Tuple[int, int]:
    return max(1, image.shape[-2] // stride), max(1, image.shape[-1] // stride)


@torch.no_grad()
def recurseed_targets(model, out: Mapping, image: torch.Tensor, keys: torch.Tensor,
                      cfg: TrainingConfig) -> Dict[str, torch.Tensor]:
    """``M_scg``, ``M_rs`` and ``M_seg`` of a batch (no gradient: the figure's stop-gradient)."""
    grid = seed_grid(model, image, cfg.seed_stride)
    cam_n = max_norm(F.interpolate(out["cams"].float(), size=grid, mode="bilinear", align_corners=False)) * keys[..., None, None]
    names = list(cfg.scg_levels or out["features"].keys())
    feats = [F.interpolate(out["features"][n].float(), size=grid, mode="bilinear", align_corners=False) for n in names]
    m_scg = scg(cam_n, feats, **dict(cfg.scg)) * keys[..., None, None]
    rgb = F.interpolate(denormalize(image.float()), size=grid, mode="bilinear", align_corners=False)
    m_rs = pamr(rgb, m_scg, int(cfg.pamr["num_iter"]), list(cfg.pamr["dilations"]))
    m_rs = _minmax(m_rs.flatten(2), dim=2).view_as(m_rs) * keys[..., None, None]
    m_seg = certain_filter(m_rs, keys, float(cfg.certain["certain"]), float(cfg.certain["uncertain"]))
    return {"scg": m_scg, "rs": m_rs, "seg": m_seg}


@torch.no_grad()
def edge_predict(out: Mapping, image: torch.Tensor, keys: torch.Tensor, cfg: TrainingConfig) -> torch.Tensor:
    """``M_ep``: decoder softmax on background + the image's classes, PAMR, :func:`edge_band`."""
    logits = out["seg_logits"].float()
    keep = torch.cat([torch.ones_like(keys[:, :1]), keys], dim=1).bool()
    probs = torch.softmax(logits.masked_fill(~keep[:, :, None, None], float("-inf")), dim=1)
    rgb = F.interpolate(denormalize(image.float()), size=logits.shape[-2:], mode="bilinear", align_corners=False)
    probs = pamr(rgb, probs, int(cfg.pamr["num_iter"]), list(cfg.pamr["dilations"]))
    return edge_band(probs, float(cfg.edge_threshold))


def seg_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE (255 ignored) on the stride-4 logits against labels nearest-resized to them (DHR ``train.py:325``)."""
    labels = F.interpolate(labels[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0].long()
    if not (labels != 255).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=255)


def training_losses(model, batch: dict, cfg: TrainingConfig, epoch: int,
                    generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
    image, keys = batch["image"], batch["cls"].float()
    w = cfg.loss_weights
    out = model.network(image)
    cam_n = max_norm(out["cams"])
    targets = recurseed_targets(model, out, image, keys, cfg)
    grid = targets["rs"].shape[-2:]
    cam_grid = F.interpolate(cam_n, size=grid, mode="bilinear", align_corners=False)
    losses = {"cls": w["cls"] * F.multilabel_soft_margin_loss(out["cls_logits"], keys),
              "rec": w["rec"] * reconstruction_loss(cam_grid, targets["rs"], keys),
              "seg": w["seg"] * seg_loss(out["seg_logits"], targets["seg"])}
    if epoch < cfg.epm_start_epoch or image.shape[0] < 2:
        return losses
    m_ep = edge_predict(out, image, keys, cfg)
    # each image pastes a random non-empty subset of its classes
    rand = torch.rand(keys.shape, generator=generator, device=keys.device)
    chosen = (rand < 0.5) & keys.bool()
    none = ~chosen.any(dim=1)
    chosen[none] = keys.bool()[none]
    seg_lab = F.interpolate(targets["seg"][:, None].float(), size=m_ep.shape[-2:], mode="nearest")[:, 0].long()
    mixed_image, mixed_label, region = paste(image, seg_lab, m_ep, chosen)
    mixed_rs = paste_maps(targets["rs"], region)
    order = torch.argsort((torch.arange(keys.shape[0], device=keys.device) + 1) % keys.shape[0])
    mixed_keys = torch.maximum(keys, keys[order] * chosen[order].float())
    mix = model.network(mixed_image)
    mix_cam = F.interpolate(max_norm(mix["cams"]), size=grid, mode="bilinear", align_corners=False)
    losses["mix_seg"] = w["mix_seg"] * seg_loss(mix["seg_logits"], mixed_label)
    losses["mix_rec"] = w["mix_rec"] * reconstruction_loss(mix_cam, mixed_rs, mixed_keys)
    return losses
