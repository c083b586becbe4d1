"""The CAM baseline: backbone, 1x1 classifier, global average pooling, multi-label soft margin.

Its CAMs are ReLU(classifier(features)); normalised by their spatial maximum they are
the seeds every method in wsss is compared with. It is also the smallest example of the method
contract (``docs/adding_a_method.md``): one output ``cam`` (foreground only, max-normalised; the
base class's default declaration), registered by name, no official release.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import WSSSModule
from .registry import register_method


@register_method
class CAMModule(WSSSModule):
    method_name = "cam"

    def __init__(self, *args, dropout: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.save_hyperparameters()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(self.backbone.out_channels, self.num_classes - 1, 1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone(image)[self.backbone.final_key]

    def raw_scores(self, image: torch.Tensor, output: str | None = None) -> torch.Tensor:
        return F.relu(self.classifier(self.features(image)))

    def image_label_probs(self, image: torch.Tensor) -> torch.Tensor:
        """The classifier on globally pooled features, as trained (sigmoid of the multi-label logits)."""
        logits = self.classifier(F.adaptive_avg_pool2d(self.features(image), 1)).flatten(1)
        return torch.sigmoid(logits)

    def training_losses(self, batch: dict) -> dict:
        feats = self.dropout(self.features(batch["image"]))
        logits = self.classifier(F.adaptive_avg_pool2d(feats, 1)).flatten(1)
        return {"cls": F.multilabel_soft_margin_loss(logits, batch["cls"])}
