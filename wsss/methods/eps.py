"""EPS: Explicit Pseudo-pixel Supervision (Lee et al., CVPR 2021; halbielee/EPS@0c2cdd0), the baseline HSC builds on.

One 1x1 classifier on the backbone's final feature gives ``C+1`` CAM channels in the EPS layout: the ``C``
foreground classes first and **the background / saliency channel last** (``network/resnet38_eps.py:12``,
``module/model.py:8-9``: ``Net(num_classes + 1)``). Training (``module/train.py:44-73``): multi-label soft margin
on the GAP of the foreground channels plus the saliency loss (:mod:`wsss.methods.eps_losses`), whose predicted
saliency mixes the softmax of the labelled classes that overlap the saliency map (the valid-class test) with the
background channel.

Inference (``infer.py:102-207``): per scale and flip, softmax over all ``C+1`` channels at the feature
resolution, resize to the image, keep the foreground channels (background dropped), sum; then divide by each
class's maximum + 1e-5 and threshold the background (``--thr``). Here ``raw_scores`` is that foreground softmax;
the sum over scales, the max normalisation and the label restriction are the shared inference's.
Every number's source: ``docs/hsc.md``.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from wsss.checkpoints import hsc as releases

from . import eps_losses
from .base import WSSSModule
from .contract import OutputSpec
from .registry import Release, register_method


@register_method
class EPSModule(WSSSModule):
    method_name = "eps"
    #: foreground softmax probabilities, summed over scales and flips, divided by their maximum (``infer.py:187``)
    outputs = (OutputSpec("cam", has_background=False, normalize="max"),)
    seed_output = "cam"
    recipes = ("eps_voc",)
    release = Release(load=releases.load_eps_into, detect=releases.is_official_eps, experiment=releases.eps_experiment,
                      title="the EPS release (checkpoint_cls.pth)")
    #: every loss term and its default weight: loss = loss_cls + loss_sal (``module/train.py:65``)
    loss_terms = {"cls": 1.0, "sal": 1.0}

    def __init__(self, *args, tau: float = 0.4, lam: float = 0.5, feature: Optional[str] = None,
                 loss_weights: Optional[Dict[str, float]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.save_hyperparameters()
        self.tau, self.lam = float(tau), float(lam)
        self.feature = feature or self.backbone.final_key
        if self.feature not in self.backbone.channels:
            raise ValueError(f"method.feature {self.feature!r} is not produced by the backbone; it has "
                             f"{list(self.backbone.channels)}")
        # fc8: 1x1, no bias, Xavier (network/resnet38_eps.py:12-14); C+1 outputs, background last
        self.classifier = nn.Conv2d(self.backbone.channels[self.feature], self.num_classes, 1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)
        weights = dict(self.loss_terms)
        unknown = set(loss_weights or {}) - set(weights)
        if unknown:
            raise ValueError(f"method.loss_weights: unknown terms {sorted(unknown)}; {self.method_name} has "
                             f"{sorted(weights)}")
        weights.update(loss_weights or {})
        self.loss_weights = weights
        self.train()  # the backbone's freezing (frozen BN affine) before optimiser groups are built

    # ----- network ---------------------------------------------------------------------------
    def features(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.backbone(image)

    def cam(self, feats: Dict[str, torch.Tensor]) -> torch.Tensor:
        """``B x (C+1) x h x w`` CAM logits, background last (``forward_cam``)."""
        return self.classifier(feats[self.feature])

    def raw_scores(self, image: torch.Tensor, output: Optional[str] = None) -> torch.Tensor:
        """Foreground channels of the softmax over all ``C+1`` channels (``infer.py:125-131``)."""
        self.output_spec(output)
        return torch.softmax(self.cam(self.features(image)).float(), dim=1)[:, :-1]

    def image_label_probs(self, image: torch.Tensor) -> Optional[torch.Tensor]:
        cam = self.cam(self.features(image))
        return torch.sigmoid(F.adaptive_avg_pool2d(cam, 1).flatten(1)[:, :-1])

    # ----- training --------------------------------------------------------------------------
    def view_losses(self, cam: torch.Tensor, saliency: torch.Tensor, label: torch.Tensor) -> Dict[str, torch.Tensor]:
        """EPS's two terms on one view's CAM logits (``module/train.py:57-64``)."""
        pred = F.adaptive_avg_pool2d(cam, 1).flatten(1)
        return {"cls": F.multilabel_soft_margin_loss(pred[:, :-1], label),
                "sal": eps_losses.eps_saliency_loss(cam, saliency, label, self.tau, self.lam)}

    def training_losses(self, batch: dict) -> Dict[str, torch.Tensor]:
        if "saliency" not in batch:
            raise KeyError(f"method={self.method_name} learns from saliency maps, but the batch has none; train with "
                           "supervision=saliency (ROOT/saliency/ID.png, or supervision.loader.saliency_dir=...)")
        label = batch["cls"].to(batch["image"].dtype)
        losses = self.view_losses(self.cam(self.features(batch["image"])), batch["saliency"], label)
        return {k: v * self.loss_weights[k] for k, v in losses.items() if self.loss_weights[k] != 0}
