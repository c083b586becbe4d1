"""The second stage: a fully supervised DeepLab trained on pseudo-label PNGs.

Every seed method ends by training a segmentation network on its pseudo labels (RTC and HSC: the
"DeepLab v2" of Yude Wang's segmentation code, RecurSeed: DeepLab v3+). This module is that
network: a backbone from the registry, a head from :mod:`wsss.models.heads`, pixel-wise cross
entropy against ``batch['mask']`` with 255 ignored. Pseudo labels reach ``batch['mask']`` through
``dataset.pseudo_label_dir=DIR``; validation uses the real GT.

Scores for inference are softmax probabilities (background first), so the shared multi-scale +
flip inference sums probabilities, as the references average them.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from wsss.checkpoints import deeplab as deeplab_release
from wsss.models.heads import build_head

from .base import WSSSModule
from .contract import OutputSpec
from .registry import Release, register_method


@register_method
class DeepLabModule(WSSSModule):
    method_name = "deeplab"
    #: softmax probabilities, background first; summed over scales they are renormalised
    outputs = (OutputSpec("seg", has_background=True, normalize="probability"),)
    seed_output = "seg"
    release = Release(load=deeplab_release.load_deeplabv2_release, detect=deeplab_release.is_official,
                      experiment=deeplab_release.official_experiment,
                      title="a DeepLab v2 release of RTC / HSC (Yude Wang's deeplabv2)")
    recipes = ("deeplabv2_voc", "deeplabv3plus_voc", "rtc_voc_deeplab")

    def __init__(self, *args, head: Mapping | None = None, ignore_index: int = 255, align_corners: bool = True,
                 bias_lr_mult: float = 1.0, bias_weight_decay: float | None = None, train_bn_affine: bool = True,
                 **kwargs):
        kwargs.setdefault("eval_with_labels", False)  # a segmentation model never sees image labels at test time
        kwargs.setdefault("bg", {"rule": "learned"})
        super().__init__(*args, **kwargs)
        self.save_hyperparameters()
        spec = dict(head or {"name": "aspp_v2"})
        self.head = build_head(spec.pop("name"), self.backbone.channels, self.backbone.strides, self.num_classes,
                               **spec)
        self.ignore_index = ignore_index
        self.align_corners = align_corners
        self.bias_lr_mult = bias_lr_mult
        self.bias_weight_decay = bias_weight_decay
        self.train_bn_affine = train_bn_affine

    # ----- network ------------------------------------------------------------------------
    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """Class logits (background first) upsampled to the image size, as the references compute them."""
        out = self.head(self.backbone(image))
        return F.interpolate(out, size=image.shape[-2:], mode="bilinear", align_corners=self.align_corners)

    def raw_scores(self, image: torch.Tensor, output: Optional[str] = None) -> torch.Tensor:
        return torch.softmax(self.logits(image), dim=1)

    # ----- training -----------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """A second stage without label maps would fail at its first step: say so before any work."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and getattr(datamodule, "train_masks", True) is False:
            raise ValueError("method=deeplab trains on label maps, and the dataset gives none: set "
                             "dataset.pseudo_label_dir=DIR (pseudo-label PNGs, e.g. from python -m wsss.pseudo_label) "
                             "or dataset.train_masks=true (the GT masks, fully supervised)")

    def training_losses(self, batch: dict) -> Dict[str, torch.Tensor]:
        if "mask" not in batch:
            raise KeyError("method=deeplab trains on label maps: the batch has no 'mask'. Set "
                           "dataset.pseudo_label_dir=DIR (pseudo-label PNGs) or dataset.train_masks=true")
        target = batch["mask"].long()
        return {"ce": F.cross_entropy(self.logits(batch["image"]), target, ignore_index=self.ignore_index)}

    # ----- optimisation -------------------------------------------------------------------
    def param_groups(self) -> List[dict]:
        """Backbone / head weights at 1x / ``head_lr_mult`` x, their biases at ``bias_lr_mult`` times that.

        The references' four SGD groups (1x, 2x, 10x, 20x; biases without weight decay) are
        ``head_lr_mult=10, bias_lr_mult=2, bias_weight_decay=0``. ``train_bn_affine=false`` leaves
        BatchNorm weights out of the optimiser, as Yude Wang's ``get_parameter_groups`` (convs only) does.
        """
        lr = self.optim_cfg["lr"]
        head_mult = self.optim_cfg.get("head_lr_mult", 10.0)
        bn_params = {id(p) for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                     for p in m.parameters()}
        groups: List[dict] = []
        for part, mult in ((self.backbone, 1.0), (self.head, head_mult)):
            weights, biases = [], []
            for name, p in part.named_parameters():
                if not p.requires_grad or (not self.train_bn_affine and id(p) in bn_params):
                    continue
                (biases if name.endswith("bias") and id(p) not in bn_params else weights).append(p)
            if weights:
                groups.append({"params": weights, "lr": lr * mult})
            if biases:
                g = {"params": biases, "lr": lr * mult * self.bias_lr_mult}
                if self.bias_weight_decay is not None:
                    g["weight_decay"] = self.bias_weight_decay
                groups.append(g)
        covered = {id(p) for g in groups for p in g["params"]}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in covered
                and (self.train_bn_affine or id(p) not in bn_params)]
        if rest:
            groups.append({"params": rest, "lr": lr * head_mult})
        return groups
