"""WS-FCN: Weakly-Supervised Feature Coupling Network (Wang et al., TNNLS 2023; ChunyanWang1/ws-fcn@73927f5,
built on visinf/1-stage-wseg).

A single-stage network trained from image tags only (``models/stage_net.py`` ``SoftMaxAE``):

* the final backbone feature goes through the flexible context aggregation (FCA,
  :class:`~wsss.models.heads.wsfcn.ContextAggregation`);
* the semantically consistent feature fusion: a learned flow aligns that feature onto the stride-4 ``low``
  level (:class:`~wsss.models.heads.wsfcn.FlowAlign`) and a two-path fusion crosses both
  (:class:`~wsss.models.heads.wsfcn.TwoPathFusion`); the stochastic gate mixes its deep and shallow outputs;
* ``last_conv`` predicts foreground logits; a constant logit 1 in front is the background; the softmax over the
  1+C channels is the mask.

Losses: multi-label soft margin on normalised global weighted pooling + the focal term (``cls``); from
``seg_start_epoch`` (the reference's ``TRAIN.PRETRAIN``) the class-balanced CE against PAMR-refined,
thresholded pseudo masks (``seg``). Inference (``infer_val.py``): every scale and its mirror padded, centred,
to ``inference.pad_size`` with 0 (outputs depend on it, the pooling sees the padding), the image's classes
predicted as max over views of sigmoid(score) > ``inference.cls_threshold``, the label-masked foreground
probabilities averaged over views; the background is a constant plane (``bg``, 0.25 in the reference).
Every number's source: ``docs/wsfcn.md``.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wsss.checkpoints import wsfcn as wsfcn_release
from wsss.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from wsss.models.heads.wsfcn import ContextAggregation, FlowAlign, TwoPathFusion, classifier, stochastic_gate

from . import wsfcn_losses as L
from .base import WSSSModule
from .cam_ops import pamr_affinity, propagate
from .contract import OutputSpec
from .registry import Release, register_method


def pick_levels(backbone, features: Optional[Mapping[str, Optional[str]]] = None) -> Dict[str, str]:
    """``low`` and ``final`` backbone levels (ws-fcn on resnet38d: ``b3``, the raw b3_2 output, and ``conv6``).

    Defaults: ``final`` the last feature, ``low`` the first feature of the largest stride below ``final``'s
    (on resnet38d ``b3``, the reference's ``conv3``; on ``tiny`` ``stage2``)."""
    names = list(backbone.channels)
    chosen = dict(features or {})
    final = chosen.get("final") or names[-1]
    if final not in backbone.channels:
        raise ValueError(f"method.features.final={final!r} is not a backbone output; it has {names}")
    finer = [n for n in names if backbone.strides[n] < backbone.strides[final]]
    if finer and not chosen.get("low"):
        coarsest = max(backbone.strides[n] for n in finer)
        chosen["low"] = next(n for n in finer if backbone.strides[n] == coarsest)
    low = chosen.get("low")
    if low is None or low not in backbone.channels:
        raise ValueError(f"WS-FCN needs a finer backbone level than {final!r} (method.features.low); "
                         f"the backbone has {dict(backbone.strides)}")
    return {"low": low, "final": final}


class WSFCNHead(nn.Module):
    """Everything after the backbone, under the reference's names (``fca``, ``align1``, ``sf2``, ``last_conv``)."""

    def __init__(self, low_channels: int, final_channels: int, num_fg: int, width: int = 256,
                 align_width: int = 128, kernels: Sequence[int] = (1, 3, 5, 7),
                 dilations: Sequence[int] = (1, 12, 24, 36), dropout: float = 0.5):
        super().__init__()
        self.align1 = FlowAlign(width, low_channels, align_width)
        self.sf2 = TwoPathFusion(low_channels, width)
        self.fca = ContextAggregation(final_channels, width, kernels, dilations, dropout)
        self.last_conv = classifier(width, num_fg)

    def forward(self, low: torch.Tensor, final: torch.Tensor, psi: float) -> torch.Tensor:
        """Foreground logits at the ``low`` level's resolution."""
        context = self.fca(final)
        aligned = self.align1(low, context)
        shallow, deep = self.sf2(low, aligned)
        return self.last_conv(stochastic_gate(deep, shallow, psi, self.training))


def with_background(fg_logits: torch.Tensor) -> torch.Tensor:
    """The constant background logit 1 in front of the foreground logits."""
    return torch.cat([torch.ones_like(fg_logits[:, :1]), fg_logits], dim=1)


@register_method
class WSFCNModule(WSSSModule):
    method_name = "wsfcn"
    #: ``seg``: the label-masked foreground probabilities (``infer_val.py``), stored as they are; background by
    #: the constant ``bg`` rule
    outputs = (OutputSpec("seg", has_background=False, normalize="none"),)
    seed_output = "seg"
    release = Release(load=wsfcn_release.load_official_into, detect=wsfcn_release.is_official,
                      experiment=wsfcn_release.official_experiment, title="the WS-FCN release")
    recipes = ("wsfcn_voc", "wsfcn_coco")
    score_aggregation = "mean"

    def __init__(self, *args, features: Optional[Mapping[str, Optional[str]]] = None,
                 head: Optional[Mapping] = None, sg_psi: float = 0.3, focal: Optional[Mapping] = None,
                 seg_start_epoch: int = 7, pamr: Optional[Mapping] = None, pseudo: Optional[Mapping] = None,
                 loss_weights: Optional[Mapping[str, float]] = None, weights: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.save_hyperparameters(ignore=["weights"])
        self.levels = pick_levels(self.backbone, features)
        self.head = WSFCNHead(self.backbone.channels[self.levels["low"]], self.backbone.channels[self.levels["final"]],
                              self.num_classes - 1, **dict(head or {}))
        self.sg_psi = float(sg_psi)
        focal = {"p": 3.0, "lambda": 0.01, **dict(focal or {})}
        self.focal_p, self.focal_lambda = float(focal["p"]), float(focal["lambda"])
        self.seg_start_epoch = int(seg_start_epoch)
        pamr = {"num_iter": 10, "dilations": [1, 2, 4, 8, 12, 24], **dict(pamr or {})}
        self.pamr_iter, self.pamr_dilations = int(pamr["num_iter"]), [int(d) for d in pamr["dilations"]]
        self.pseudo_cfg = {"bg_factor": 0.7, "fg_factor": 0.6, "cutoff_low": 0.2, **dict(pseudo or {})}
        lw = {"cls": 1.0, "seg": 1.0}
        unknown = set(loss_weights or {}) - set(lw)
        if unknown:
            raise ValueError(f"method.loss_weights: unknown terms {sorted(unknown)}; WS-FCN has {sorted(lw)}")
        lw.update(loss_weights or {})
        self.loss_weights = lw
        self.train()  # applies the backbone's freezing before optimiser groups are built
        if weights:
            self.load_official(weights)

    def train(self, mode: bool = True):
        super().train(mode)
        # fca.py / stage_net.py _init_fca: _fix_running_stats(self.fca): FCA's BatchNorms always use their
        # running statistics (never updated), their affine parameters still train
        for m in self.head.fca.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    # ----- network ---------------------------------------------------------------------------
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``B x (1+C) x h x w`` logits at the ``low`` level's stride (background logit 1 first)."""
        feats = self.backbone(image)
        return with_background(self.head(feats[self.levels["low"]], feats[self.levels["final"]], self.sg_psi))

    def class_scores(self, logits: torch.Tensor) -> torch.Tensor:
        return L.gwp_focal_scores(logits, self.focal_p, self.focal_lambda)

    def image_label_probs(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.class_scores(self.forward(image)))

    def views_scores(self, views: torch.Tensor):
        """Per view: masks (softmax, bilinear align_corners to the view size) and sigmoid class scores."""
        logits = self.forward(views)
        masks = F.interpolate(torch.softmax(logits, dim=1), size=views.shape[-2:], mode="bilinear",
                              align_corners=True)
        return masks, torch.sigmoid(self.class_scores(logits))

    def raw_scores(self, image: torch.Tensor, output: Optional[str] = None) -> torch.Tensor:
        """One view: foreground probabilities at the input size, zero for the classes it predicts absent."""
        self.output_spec(output)
        masks, probs = self.views_scores(image)
        keep = (probs > float(self.inference["cls_threshold"])).to(masks.dtype)
        return masks[:, 1:] * keep[:, :, None, None]

    @torch.no_grad()
    def multiscale_raw_scores(self, inputs: Sequence[torch.Tensor], size: Sequence[int], flip: bool = True,
                              aggregation: Optional[str] = None, channels_last: bool = False,
                              output: Optional[str] = None) -> torch.Tensor:
        """``infer_val.py`` + ``MergeMultiScale``: all views of an image (scales x mirror) padded centred to
        ``inference.pad_size`` with 0 and run as one batch; classes = max over views of sigmoid > ``cls_threshold``; each
        view's masks cropped, resized to ``size`` (align_corners=False), un-mirrored, label-masked, averaged."""
        self.output_spec(output)
        b = inputs[0].shape[0]
        views, boxes = [], []
        for x in inputs:
            for mirrored in ((False, True) if flip else (False,)):
                v = x.flip(-1) if mirrored else x
                padded, box = self._pad(v)
                views.append(padded)
                boxes.append((box, mirrored))
        batch = torch.stack(views, dim=1).flatten(0, 1)  # image-major: B*V x 3 x P x P
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        masks, probs = self.views_scores(batch)
        nv = len(views)
        masks = masks.float().view(b, nv, *masks.shape[1:])
        class_probs = probs.float().view(b, nv, -1).max(dim=1).values
        self.remember_class_probs(inputs, flip, class_probs)  # the runner's classes=predicted reads these
        keep = class_probs > float(self.inference["cls_threshold"])
        total = None
        for i, ((top, left, h, w), mirrored) in enumerate(boxes):
            part = masks[:, i, 1:, top:top + h, left:left + w]
            part = F.interpolate(part, size=tuple(size), mode="bilinear", align_corners=False)
            part = part.flip(-1) if mirrored else part
            total = part if total is None else total + part
        return total / nv * keep.to(total.dtype)[:, :, None, None]

    def _pad(self, x: torch.Tensor):
        """Centre ``x`` in a ``pad_size`` canvas of zeros (``pascal_voc_ms.py`` ``_pad``); the crop box."""
        h, w = x.shape[-2:]
        pad_size = self.inference.get("pad_size")
        if not pad_size:
            return x, (0, 0, h, w)
        ph, pw = (int(s) for s in pad_size)
        if h > ph or w > pw:
            raise ValueError(f"a {h}x{w} view does not fit method.inference.pad_size={[ph, pw]} (the reference "
                             "asserts the same); raise method.inference.pad_size or drop the larger scales")
        top, left = (ph - h) // 2, (pw - w) // 2
        return F.pad(x, (left, pw - w - left, top, ph - h - top)), (top, left, h, w)

    # ----- training --------------------------------------------------------------------------
    def training_losses(self, batch: dict) -> Dict[str, torch.Tensor]:
        image = batch["image"]
        fg_label = batch["cls"].to(image.dtype)
        logits = self.forward(image)
        losses = {"cls": F.multilabel_soft_margin_loss(self.class_scores(logits), fg_label)}
        if self.current_epoch >= self.seg_start_epoch and self.loss_weights["seg"] > 0:
            pseudo = self.pseudo_masks(image, logits, fg_label)
            losses["seg"] = L.balanced_mask_ce(logits, pseudo, fg_label).mean()
        return {k: v * self.loss_weights[k] for k, v in losses.items() if self.loss_weights[k] != 0}

    @torch.no_grad()
    def pseudo_masks(self, image: torch.Tensor, logits: torch.Tensor, fg_label: torch.Tensor) -> torch.Tensor:
        """PAMR on the detached masks over the de-normalised image at the mask size, then to the image size
        (align_corners), absent classes zeroed, thresholded (``stage_net.py`` ``run_pamr``, ``pseudo_gtmask``)."""
        masks = torch.softmax(logits.detach().float(), dim=1)
        mean = image.new_tensor(IMAGENET_MEAN)[None, :, None, None]
        std = image.new_tensor(IMAGENET_STD)[None, :, None, None]
        small = F.interpolate(image.float() * std + mean, size=masks.shape[-2:], mode="bilinear", align_corners=True)
        refined = propagate(masks, pamr_affinity(small, self.pamr_dilations), self.pamr_dilations, self.pamr_iter)
        refined = F.interpolate(refined, size=image.shape[-2:], mode="bilinear", align_corners=True)
        keep = torch.cat([torch.ones_like(fg_label[:, :1]), fg_label], dim=1)
        return L.pseudo_masks(refined * keep[:, :, None, None], **self.pseudo_cfg)
