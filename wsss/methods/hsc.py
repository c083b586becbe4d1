"""HSC: Hierarchical Semantic Contrast (Wu et al., IJCAI 2023; Wu0409/HSC_WSSS@402ee60) on the EPS baseline.

Network (``network/resnet38_eps_seam_hsc.py``): EPS's ``C+1``-channel CAM (background / saliency last) on the
backbone's final feature, SEAM's pixel correlation module (PCM) that refines the CAM with an affinity from two
shallower levels and the downsampled image, and two projectors for the contrast terms: a pixel projector
(``proj_fc``, ReLU'd 128-d) and a region / class projector (``extra_F``, 3x3 conv - BN - ReLU - 1x1 conv, 256-d).
:meth:`HSCModule.forward` returns what the reference ``Net.forward`` returns, by name.

Inference is EPS's (``inference.py`` = EPS ``infer.py`` with ``--thr 0.22`` and the CRF of ``crf=hsc``): the
foreground channels of the softmax over all ``C+1`` channels of ``forward_cam`` (``fc8(conv6)`` only), summed over
scales and flips, divided by their maximum; the released file loads through :mod:`wsss.checkpoints.hsc`.

Training (``module/train.py`` ``train_hsc``): one forward per view (the crop and its ``view2_size`` resize), the
baseline terms of :mod:`wsss.methods.hsc_losses` (``cls`` with adaptive min-pooling of the PCM CAM, EPS's ``sal`` on
CAM and PCM CAM, SEAM's ``er`` / ``ecr``) and the ROI-, class- and pixel-level contrast (``rsc``, ``csc``, ``psc``) of
:class:`wsss.methods.hsc_contrast.HierarchicalSemanticContrast`, whose memories are buffers of this module.
Every number's source: ``docs/hsc.md``.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from wsss.checkpoints import hsc as hsc_release

from .eps import EPSModule
from .hsc_contrast import HierarchicalSemanticContrast
from .hsc_losses import contrast_targets, hsc_baseline_losses, label_crf_preset, second_view
from .registry import Release, register_method


def _at(x: torch.Tensor, size) -> torch.Tensor:
    """``x`` at ``size`` (bilinear, align_corners): backbones whose PCM levels have another stride than the CAM."""
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=tuple(size), mode="bilinear",
                                                                      align_corners=True)


def pick_pcm_levels(backbone, levels: Optional[Mapping[str, Optional[str]]] = None) -> Dict[str, str]:
    """Backbone levels of the PCM: ``mid`` and ``high`` (HSC on resnet38d: conv4 and conv5) and ``final`` (conv6).
    Null entries: ``final`` the last level, ``high`` and ``mid`` the two before it."""
    names = list(backbone.channels)
    chosen = dict(levels or {})
    final = chosen.get("final") or names[-1]
    idx = names.index(final) if final in names else -1
    if idx < 1:
        raise ValueError(f"HSC's PCM needs two levels before method.levels.final={final!r}; the backbone has {names}")
    out = {"mid": chosen.get("mid") or names[max(idx - 2, 0)], "high": chosen.get("high") or names[idx - 1],
           "final": final}
    unknown = {k: v for k, v in out.items() if v not in backbone.channels}
    if unknown:
        raise ValueError(f"method.levels {unknown} not produced by the backbone; it has {names}")
    return out


@register_method
class HSCModule(EPSModule):
    method_name = "hsc"
    release = Release(load=hsc_release.load_official_into, detect=hsc_release.is_official,
                      experiment=hsc_release.official_experiment, title="the HSC release (HSC_eps_v2.pth)")
    recipes = ("hsc_voc",)
    #: every loss term and its default weight: the plain sum of train.py:579
    loss_terms = {"cls": 1.0, "sal": 1.0, "er": 1.0, "ecr": 1.0, "rsc": 1.0, "csc": 1.0, "psc": 1.0}

    def __init__(self, *args, levels: Optional[Mapping[str, Optional[str]]] = None,
                 head: Optional[Mapping[str, int]] = None, view2_size: int = 128, ecr_fraction: float = 0.2,
                 bg_threshold: float = 0.10, label_crf: Optional[Mapping] = None,
                 contrast: Optional[Mapping] = None, weights: Optional[str] = None, tau: float = 0.5, **kwargs):
        levels = dict(levels or {})
        kwargs["tau"] = tau  # HSC's train_voc.py:38 --tau 0.5 (EPSModule's default is EPS's 0.4)
        if kwargs.get("feature") is None:  # the CAM's level is the PCM's `final` (checkpoints record it as `feature`)
            kwargs["feature"] = levels.get("final")
        super().__init__(*args, **kwargs)
        # the official file is only a starting point: a Lightning checkpoint reloads without it
        self.save_hyperparameters(ignore=["weights"])
        self.levels = pick_pcm_levels(self.backbone, {**levels, "final": self.feature})
        dims = {"mid_dim": 64, "high_dim": 128, "pcm_dim": 192, "pixel_dim": 128, "region_dim": 256, **dict(head or {})}
        ch = self.backbone.channels
        c_mid, c_high, c_final = (ch[self.levels[k]] for k in ("mid", "high", "final"))
        # network/resnet38_eps_seam_hsc.py:14-33 (names there: f8_3, f8_4, f9, proj_fc, extra_F)
        self.pcm_mid = nn.Conv2d(c_mid, dims["mid_dim"], 1, bias=False)
        self.pcm_high = nn.Conv2d(c_high, dims["high_dim"], 1, bias=False)
        self.pcm_fuse = nn.Conv2d(dims["mid_dim"] + dims["high_dim"] + 3, dims["pcm_dim"], 1, bias=False)
        self.pixel_proj = nn.Conv2d(c_final, dims["pixel_dim"], 1, bias=False)
        self.region_proj = nn.Sequential(
            nn.Conv2d(c_final, dims["region_dim"], 3, padding=1), nn.BatchNorm2d(dims["region_dim"]),
            nn.ReLU(inplace=True), nn.Conv2d(dims["region_dim"], dims["region_dim"], 1))
        nn.init.xavier_uniform_(self.pixel_proj.weight)
        nn.init.kaiming_normal_(self.pcm_mid.weight)
        nn.init.kaiming_normal_(self.pcm_high.weight)
        nn.init.xavier_uniform_(self.pcm_fuse.weight, gain=4)
        # network/resnet38d.py Net.train: *every* BatchNorm eval with frozen affine, extra_F's included
        for p in self.region_proj[1].parameters():
            p.requires_grad_(False)
        self.view2_size = int(view2_size)
        self.ecr_fraction, self.bg_threshold = float(ecr_fraction), float(bg_threshold)
        # the contrast runs at the CAM size of view 2 (train.py:422, 128 // 8); its memories are buffers
        contrast = dict(contrast or {})
        if contrast.get("size") is None:
            contrast["size"] = self.view2_size // 8
        self.contrast_size = int(contrast["size"])
        if "sim_clamp" in contrast:
            contrast["sim_clamp"] = tuple(contrast["sim_clamp"])
        self.contrast = HierarchicalSemanticContrast(num_classes=self.num_classes, roi_dim=dims["region_dim"],
                                                     pixel_dim=dims["pixel_dim"], **contrast)
        self.label_crf = label_crf_preset(dict(label_crf or {}))
        self.train()
        if weights:
            self.load_official(weights)

    def train(self, mode: bool = True) -> "HSCModule":
        super().train(mode)
        if hasattr(self, "region_proj"):
            self.region_proj[1].eval()
        return self

    # ----- network ---------------------------------------------------------------------------
    def pcm(self, cam: torch.Tensor, feats: Mapping[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        """SEAM's PCM as HSC runs it (``Net.forward:86-101``, ``Net.PCM:66-76``) on the ``C+1``-channel CAM."""
        n, c, h, w = cam.shape
        with torch.no_grad():
            d = F.relu(cam.detach())
            peak = d.flatten(2).max(-1).values[..., None, None] + 1e-5
            d = F.relu(d - 1e-5) / peak
            fg = d[:, :-1]
            top = fg.max(dim=1, keepdim=True).values
            d = torch.cat([fg.masked_fill(fg < top, 0.0), 1 - top], dim=1)
        mid = F.relu(self.pcm_mid(_at(feats[self.levels["mid"]].detach(), (h, w))))
        high = F.relu(self.pcm_high(_at(feats[self.levels["high"]].detach(), (h, w))))
        small = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=True)
        f = self.pcm_fuse(torch.cat([small, mid, high], dim=1)).flatten(2)
        f = f / (f.norm(dim=1, keepdim=True) + 1e-5)
        aff = F.relu(f.transpose(1, 2) @ f)
        aff = aff / (aff.sum(dim=1, keepdim=True) + 1e-5)
        return (d.flatten(2) @ aff).view(n, c, h, w)

    def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The reference ``Net.forward``'s six outputs by name: ``pred``, ``cam``, ``pred_rv``, ``cam_rv``,
        ``pixel_feat`` (``f_map_1``) and ``region_feat`` (``f_map_2``)."""
        feats = self.features(image)
        final = feats[self.feature]
        cam = self.classifier(final)
        cam_rv = self.pcm(cam, feats, image)
        return {"cam": cam, "pred": F.adaptive_avg_pool2d(cam, 1).flatten(1),
                "cam_rv": cam_rv, "pred_rv": F.adaptive_avg_pool2d(cam_rv, 1).flatten(1),
                "pixel_feat": F.relu(self.pixel_proj(final)), "region_feat": self.region_proj(final)}

    # ----- training --------------------------------------------------------------------------
    def training_losses(self, batch: dict) -> Dict[str, torch.Tensor]:
        """The seven terms of ``train_hsc`` (train.py:536-579), weighted by ``method.loss_weights``. The networks run
        in the trainer's precision; the loss pieces in float32 (the InfoNCE logits divide unnormalised memories,
        |m| ~ 11, by 0.1). Memories update in training mode only."""
        if "saliency" not in batch:
            raise KeyError("method=hsc learns from saliency maps, but the batch has none; train with "
                           "supervision=saliency (ROOT/saliency/ID.png, or supervision.loader.saliency_dir=...)")
        image = batch["image"]
        label = batch["cls"].float()
        sal1 = batch["saliency"].float()
        sal1 = sal1 if sal1.dim() == 4 else sal1[:, None]
        image2, sal2 = second_view(image, sal1.to(image.dtype), self.view2_size)
        v1, v2 = self.forward(image), self.forward(image2)
        with torch.autocast(device_type=image.device.type, enabled=False):
            v1 = {k: t.float() for k, t in v1.items()}
            v2 = {k: t.float() for k, t in v2.items()}
            losses = hsc_baseline_losses(v1["cam"], v1["cam_rv"], v2["cam"], v2["cam_rv"], sal1, sal2.float(), label,
                                         tau=self.tau, alpha=self.lam, ecr_fraction=self.ecr_fraction)
            targets = contrast_targets(v1["cam_rv"], v2["cam_rv"], image2.float(), label, size=self.contrast_size,
                                       bg_threshold=self.bg_threshold, crf_preset=self.label_crf)
            losses.update(self.contrast(v1["pixel_feat"], v1["region_feat"], v2["pixel_feat"], v2["region_feat"],
                                        targets, label))
        unknown = set(losses) - set(self.loss_weights)
        if unknown:
            raise KeyError(f"HSC loss terms {sorted(unknown)} have no entry in method.loss_weights")
        return {k: v * self.loss_weights[k] for k, v in losses.items() if self.loss_weights[k] != 0}
