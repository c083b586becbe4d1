"""RTC: Representation, Transform and Compensator (ChunyanWang1/RTC, network ``resnet38_contrast``).

A siamese single-stage WSSS method. One network sees two transforms of the image (the crop, and the
crop resized to ``view2_size``); it predicts

* a CAM (``cam_proj`` -> ``cam_classifier``, background included) from the final feature;
* a *refined* CAM ``cam_rv`` (cross-representation refinement, the reference ``FCM``/``PCM``): the
  normalised CAM is propagated with two pixel affinities, one from the deep features (``high`` and
  ``final`` levels) and one from a shallow level (``mid``) concatenated with the downsampled image;
* a segmentation map (``seg_*``, an atrous head on the final feature fused with a ``low``-level
  feature), trained on pseudo masks refined from ``cam_rv``.

Losses (weights and schedules in ``conf/method/rtc.yaml``, sources in ``docs/rtc.md``): multi-label
classification of both views, adaptive min pooling of ``cam_rv``, equivariance between views
(``er``), cross-view equivariant consistency of ``cam_rv`` with the partner's one-hot CAM (``ecr``),
the transform/compensator structure loss (``struct``) with cross-view class prototypes, three
pixel-to-prototype contrastive terms, and the class-balanced segmentation loss.

Inference (``raw_scores``, seed output ``seg``) is the reference ``contrast_infer.py``:
``softmax(seg) * sigmoid(GAP(cam))`` for the foreground classes at the input size; scales are **averaged**
(``score_aggregation``) and the background is a constant plane (0.17 in the reference). The CAM branch is a
second output, ``cam`` (its ReLU'd foreground maps, max-normalised like the CAM baseline's).

Backbone levels are read by name from the backbone's output dict (``features``); ``null`` picks them
from the strides so any backbone of the ``Backbone`` contract works (``tiny`` in tests).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from wsss.checkpoints import rtc as rtc_release
from wsss.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from wsss.data.voc import is_valid_pixel

from . import rtc_losses as L
from .base import WSSSModule
from .cam_ops import minmax_normalize
from .contract import OutputSpec
from .registry import Release, register_method
from .rtc_refine import refine_pseudo_mask



def _up(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def pick_levels(backbone, features: Optional[Mapping[str, Optional[str]]] = None) -> Dict[str, str]:
    """Names of the ``low``/``mid``/``high``/``final`` levels (RTC on resnet38d: conv3/conv4/conv5/conv6).

    Defaults: ``final`` = the last feature, ``high`` and ``mid`` the two entries before it, ``low`` the
    deepest feature with a smaller stride than ``final`` (the stride-4 map for a stride-8 network).
    """
    names = list(backbone.channels)
    chosen = dict(features or {})
    final = chosen.get("final") or names[-1]
    idx = names.index(final)
    if idx < 1:
        raise ValueError(f"RTC needs at least two backbone levels; {type(backbone).__name__} has {names}")
    high = chosen.get("high") or names[max(idx - 1, 0)]
    mid = chosen.get("mid") or names[max(idx - 2, 0)]
    finer = [n for n in names[:idx] if backbone.strides[n] < backbone.strides[final]]
    low = chosen.get("low") or (finer[-1] if finer else names[0])
    out = {"low": low, "mid": mid, "high": high, "final": final}
    unknown = {k: v for k, v in out.items() if v not in backbone.channels}
    if unknown:
        raise ValueError(f"method.features {unknown} not produced by the backbone; it has {names}")
    return out


class RTCHead(nn.Module):
    """All of RTC's layers on top of the backbone (official names in ``wsss/checkpoints/rtc.py``)."""

    def __init__(self, channels: Mapping[str, int], num_classes: int, proj_dim: int = 256, mid_dim: int = 64,
                 deep_dim: int = 128, aspp_dim: int = 512, seg_dim: int = 256, low_dim: int = 48,
                 seg_dilation: int = 12, dropout: float = 0.5):
        super().__init__()
        c_low, c_mid, c_high, c_final = (channels[k] for k in ("low", "mid", "high", "final"))
        conv = lambda i, o, k=1, **kw: nn.Conv2d(i, o, k, bias=kw.pop("bias", False), **kw)  # noqa: E731
        self.dropout = nn.Dropout2d(dropout)
        # CAM branch (reference proj1, classifier1)
        self.cam_proj = conv(c_final, proj_dim)
        self.cam_classifier = conv(proj_dim, num_classes)
        # cross-representation refinement (reference f8_3, f8_4, f8_5, f9_1, f9_2)
        self.fcm_mid = conv(c_mid, mid_dim)
        self.fcm_high = conv(c_high, deep_dim)
        self.fcm_final = conv(c_final, deep_dim)
        self.fcm_deep = conv(2 * deep_dim, deep_dim)
        self.fcm_shallow = conv(mid_dim + 3, mid_dim)
        # segmentation branch (reference fc8_seg_conv1..5, proj2, classifier2)
        self.seg_aspp1 = conv(c_final, aspp_dim, 3, padding=seg_dilation, dilation=seg_dilation, bias=True)
        self.seg_aspp2 = conv(aspp_dim, seg_dim, 3, padding=seg_dilation, dilation=seg_dilation, bias=True)
        self.seg_local = conv(c_final, seg_dim, 3, padding=1)
        self.seg_fuse = conv(2 * seg_dim, seg_dim)
        self.seg_low = conv(c_low, low_dim, 3, padding=1)
        self.seg_proj = conv(seg_dim + low_dim, proj_dim)
        self.seg_classifier = conv(proj_dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's initialisation (``resnet38_contrast.py:45-75``)."""
        for m in (self.cam_proj, self.cam_classifier, self.seg_proj, self.seg_classifier, self.fcm_shallow,
                  self.seg_aspp1, self.seg_aspp2, self.seg_local, self.seg_fuse, self.seg_low):
            nn.init.xavier_uniform_(m.weight)
        nn.init.xavier_uniform_(self.fcm_deep.weight, gain=4)
        for m in (self.fcm_mid, self.fcm_high, self.fcm_final):
            nn.init.kaiming_normal_(m.weight)

    # --- reference FCM / PCM ------------------------------------------------------------------
    @staticmethod
    def propagate(cam: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        n, _, h, w = feat.shape
        cam = _up(cam, (h, w)).flatten(2)
        f = feat.flatten(2)
        f = f / (f.norm(dim=1, keepdim=True) + 1e-5)
        aff = F.relu(f.transpose(1, 2) @ f)
        aff = aff / (aff.sum(dim=1, keepdim=True) + 1e-5)
        return (cam @ aff).view(n, -1, h, w)

    def refine(self, cam: torch.Tensor, feats: Mapping[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        h, w = cam.shape[-2:]
        with torch.no_grad():
            c = F.relu(cam.detach())
            peak = c.flatten(2).max(-1).values[..., None, None] + 1e-5
            c = F.relu(c - 1e-5) / peak
            fg = c[:, 1:]
            top = fg.max(dim=1, keepdim=True).values
            c = torch.cat([1 - top, fg.masked_fill(fg < top, 0.0)], dim=1)
        lvl = {k: _up(v.detach(), (h, w)) if v.shape[-2:] != (h, w) else v.detach() for k, v in feats.items()}
        f_mid = F.relu(self.fcm_mid(lvl["mid"]))
        f_high = F.relu(self.fcm_high(lvl["high"]))
        f_final = F.relu(self.fcm_final(lvl["final"]))
        deep = self.fcm_deep(torch.cat([f_high, f_final], dim=1))
        shallow = self.fcm_shallow(torch.cat([_up(image, (h, w)), f_mid], dim=1))
        return (self.propagate(c, deep) + self.propagate(c, shallow)) / 2

    def segment(self, feats: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = feats["final"]
        deep = self.seg_fuse(torch.cat([self.seg_aspp2(self.seg_aspp1(x)), self.seg_local(x)], dim=1))
        low = feats["low"]
        deep = _up(deep, low.shape[-2:])
        fused = F.relu(self.seg_proj(torch.cat([deep, self.seg_low(low)], dim=1)))
        return self.seg_classifier(fused)

    def forward(self, feats: Mapping[str, torch.Tensor], image: torch.Tensor, with_seg: bool = True,
                with_refine: bool = True) -> Dict[str, torch.Tensor]:
        proj = F.relu(self.cam_proj(self.dropout(feats["final"])))
        cam = self.cam_classifier(proj)
        out = {"cam_down": cam, "proj": proj, "cam": _up(cam, image.shape[-2:])}
        if with_refine:
            out["cam_rv_down"] = self.refine(cam, feats, image)
            out["cam_rv"] = _up(out["cam_rv_down"], image.shape[-2:])
        if with_seg:
            out["seg"] = self.segment(feats)
        return out


@register_method
class RTCModule(WSSSModule):
    method_name = "rtc"
    #: ``seg``: the reference's inference scores, stored as they are (``contrast_infer.py`` saves the mean scores,
    #: no normalisation); ``cam``: the CAM branch
    outputs = (OutputSpec("seg", has_background=False, normalize="none"),
               OutputSpec("cam", has_background=False, normalize="max"))
    seed_output = "seg"
    release = Release(load=rtc_release.load_official_into, detect=rtc_release.is_official,
                      experiment=rtc_release.official_experiment, title="the RTC release")
    recipes = ("rtc_voc",)
    #: multi-scale inference averages raw scores (``contrast_infer.py:85``), it does not sum them
    score_aggregation = "mean"

    def __init__(self, *args, features: Optional[Mapping[str, Optional[str]]] = None,
                 head: Optional[Mapping] = None, view2_size: int = 128, bg_threshold: float = 0.2,
                 temperature: float = 0.1, prototype_top_divisor: int = 8, ecr_top: float = 0.2,
                 struct_top: float = 0.8, seg_start_epoch: int = 7, refine: Optional[Mapping] = None,
                 loss_weights: Optional[Mapping[str, float]] = None,
                 weights: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        # the official file is only a starting point: a Lightning checkpoint reloads without it
        self.save_hyperparameters(ignore=["weights"])
        self.levels = pick_levels(self.backbone, features)
        channels = {k: self.backbone.channels[v] for k, v in self.levels.items()}
        self.head = RTCHead(channels, self.num_classes, **dict(head or {}))
        self.view2_size = int(view2_size)
        self.bg_threshold = float(bg_threshold)
        self.temperature = float(temperature)
        self.prototype_top_divisor = int(prototype_top_divisor)
        self.ecr_top, self.struct_top = float(ecr_top), float(struct_top)
        self.seg_start_epoch = int(seg_start_epoch)
        self.refine_cfg = dict(refine or {})
        lw = {"cls": 1.0, "min_pool": 1.0, "er": 1.0, "ecr": 1.0, "struct": 1.0,
                   "nce_intra": 0.1, "nce_cross_label": 0.1, "nce_cross_proto": 0.1, "seg": 1.0}
        unknown = set(loss_weights or {}) - set(lw)
        if unknown:
            raise ValueError(f"method.loss_weights: unknown terms {sorted(unknown)}; RTC has {sorted(lw)}")
        lw.update(loss_weights or {})
        self.loss_weights = lw
        self.train()  # applies the backbone's freezing (frozen BN affine) before optimiser groups are built
        if weights:
            self.load_official(weights)

    # ----- network ---------------------------------------------------------------------------
    def forward(self, image: torch.Tensor, with_seg: bool = True, with_refine: bool = True) -> Dict[str, torch.Tensor]:
        feats = self.backbone(image)
        lv = {k: feats[v] for k, v in self.levels.items()}
        return self.head(lv, image, with_seg=with_seg, with_refine=with_refine)

    def raw_scores(self, image: torch.Tensor, output: Optional[str] = None) -> torch.Tensor:
        """``seg``: foreground ``softmax(seg) * sigmoid(GAP(cam))`` at the input size (``contrast_infer.py:62-71``);
        ``cam``: the ReLU'd foreground CAMs at the feature resolution."""
        if self.output_spec(output).name == "cam":
            return F.relu(self.forward(image, with_seg=False, with_refine=False)["cam_down"][:, 1:])
        out = self.forward(image, with_seg=True, with_refine=False)
        cls = torch.sigmoid(F.adaptive_avg_pool2d(out["cam"], 1))
        seg = torch.softmax(_up(out["seg"], image.shape[-2:]), dim=1)
        return (seg * cls)[:, 1:]

    # ----- training --------------------------------------------------------------------------
    def training_losses(self, batch: dict) -> Dict[str, torch.Tensor]:
        img1 = batch["image"]
        fg_label = batch["cls"].to(img1.dtype)
        label = torch.cat([torch.ones_like(fg_label[:, :1]), fg_label], dim=1)
        lab = label[:, :, None, None]
        s = self.view2_size
        img2 = F.interpolate(img1, size=(s, s), mode="bilinear", align_corners=True)
        use_seg = self.current_epoch >= self.seg_start_epoch and self.loss_weights["seg"] > 0

        o1 = self.forward(img1, with_seg=use_seg)
        o2 = self.forward(img2, with_seg=False)
        losses: Dict[str, torch.Tensor] = {}
        cls1 = F.adaptive_avg_pool2d(o1["cam"], 1).flatten(1)[:, 1:]
        cls2 = F.adaptive_avg_pool2d(o2["cam"], 1).flatten(1)[:, 1:]
        losses["cls"] = (F.multilabel_soft_margin_loss(cls1, fg_label) + F.multilabel_soft_margin_loss(cls2, fg_label)) / 2
        losses["min_pool"] = (L.adaptive_min_pooling_loss((o1["cam_rv"] * lab)[:, 1:])
                              + L.adaptive_min_pooling_loss((o2["cam_rv"] * lab)[:, 1:])) / 2

        cam1 = F.interpolate(minmax_normalize(o1["cam"]), size=(s, s), mode="bilinear", align_corners=True) * lab
        rv1 = F.interpolate(minmax_normalize(o1["cam_rv"]), size=(s, s), mode="bilinear", align_corners=True) * lab
        cam2 = minmax_normalize(o2["cam"]) * lab
        rv2 = minmax_normalize(o2["cam_rv"]) * lab
        losses["er"] = (cam1[:, 1:] - cam2[:, 1:]).abs().mean()
        cam1 = torch.cat([1 - cam1[:, 1:].max(dim=1, keepdim=True).values, cam1[:, 1:]], dim=1)
        cam2 = torch.cat([1 - cam2[:, 1:].max(dim=1, keepdim=True).values, cam2[:, 1:]], dim=1)
        hot1, hot2 = L.max_onehot(cam1), L.max_onehot(cam2)
        losses["ecr"] = (L.topk_abs_mean(hot2.detach(), rv1, self.ecr_top)
                         + L.topk_abs_mean(hot1.detach(), rv2, self.ecr_top))

        if use_seg:
            losses["seg"] = self._seg_loss(batch, img1, o1, label)

        # cross-transform prototypes and compensator
        f2 = o2["proj"]
        size2 = f2.shape[-2:]
        f1 = _up(o1["proj"], size2)
        with torch.no_grad():
            n1, pl1 = L.normalise_for_prototypes(_up(o1["cam_rv_down"], size2), label, self.bg_threshold)
            n2, pl2 = L.normalise_for_prototypes(o2["cam_rv_down"], label, self.bg_threshold)
            p1, p2, new1, new2 = L.cross_view_prototypes(n1, n2, f1.detach(), f2.detach(), label,
                                                         self.prototype_top_divisor)
        new1 = F.interpolate(minmax_normalize(new1), size=(s, s), mode="bilinear", align_corners=True) * lab
        new2 = F.interpolate(minmax_normalize(new2), size=(s, s), mode="bilinear", align_corners=True) * lab
        losses["struct"] = (L.topk_abs_mean(L.max_onehot(new1)[:, 1:], hot1[:, 1:], self.struct_top)
                            + L.topk_abs_mean(L.max_onehot(new2)[:, 1:], hot2[:, 1:], self.struct_top))

        d = f1.shape[1]
        q1 = F.normalize(f1.permute(0, 2, 3, 1).reshape(-1, d), dim=-1)
        q2 = F.normalize(f2.permute(0, 2, 3, 1).reshape(-1, d), dim=-1)
        pl1, pl2 = pl1.reshape(-1), pl2.reshape(-1)
        t = self.temperature
        losses["nce_intra"] = (L.prototype_nce(q1, p1, pl1, t) + L.prototype_nce(q2, p2, pl2, t)) / 2
        losses["nce_cross_label"] = (L.prototype_nce(q1, p1, pl2, t) + L.prototype_nce(q2, p2, pl1, t)) / 2
        losses["nce_cross_proto"] = (L.prototype_nce(q1, p2, pl1, t) + L.prototype_nce(q2, p1, pl2, t)) / 2
        return {k: v * self.loss_weights[k] for k, v in losses.items() if self.loss_weights[k] != 0}

    def _seg_loss(self, batch: dict, image: torch.Tensor, out: Dict[str, torch.Tensor],
                  label: torch.Tensor) -> torch.Tensor:
        """Segmentation branch on pseudo masks from the refined CAM (``contrast_train.py:362-382``)."""
        with torch.no_grad():
            mean = image.new_tensor(IMAGENET_MEAN)[None, :, None, None]
            std = image.new_tensor(IMAGENET_STD)[None, :, None, None]
            image01 = image.float() * std + mean
            cams = _up(minmax_normalize(out["cam_rv_down"]) * label[:, :, None, None], image.shape[-2:])[:, 1:]
            valid = batch.get("valid")  # dataset.valid_mask=true: padding excluded like the reference's crop box
            valid = is_valid_pixel(valid) if valid is not None else None
            pseudo = refine_pseudo_mask(image01, cams.float(), label[:, 1:], valid=valid, **self.refine_cfg)
        return L.balanced_mask_ce(out["seg"], pseudo, label[:, 1:])

