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

from typing import Dict, Mapping, Optional

import torch
import torch.nn.functional as F

from wsss.checkpoints import deeplab as deeplab_release
from wsss.models.heads import build_head

from .base import WSSSModule
from .contract import SOFTMAX_SEG
from .registry import Release, register_method


@register_method
class DeepLabModule(WSSSModule):
    method_name = "deeplab"
    outputs = (SOFTMAX_SEG,)
    seed_output = "seg"
    release = Release(load=deeplab_release.load_deeplabv2_release, detect=deeplab_release.is_official,
                      experiment=deeplab_release.official_experiment,
                      title="a DeepLab release of RTC / HSC (Yude Wang's deeplabv2) or RecurSeed (DeepLab v3+ / v2)")
    recipes = ("deeplabv2_voc", "deeplabv3plus_voc", "rtc_voc_deeplab", "recurseed_voc_deeplabv3plus",
               "recurseed_voc_deeplabv2", "recurseed_coco_deeplabv3plus", "hsc_voc_deeplab")

    def __init__(self, *args, head: Mapping | None = None, ignore_index: int = 255, align_corners: bool = True,
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
