"""DeepLab v3+ decoder: refine the ASPP output with a low-level (stride 4) skip.

Layout of RecurSeed's ``Decoder`` (``core/layers.py``): the low-level feature is reduced to 48
channels by 1x1 conv-BN-ReLU, the ASPP output is upsampled to its size and concatenated, then two
3x3 conv-BN-ReLU (dropout 0.5 after the first, 0.1 after the second) and a 3x3 classifier.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .aspp import conv_bn_relu


class DeepLabV3PlusDecoder(nn.Module):
    def __init__(self, low_in_channels: int, in_channels: int, num_classes: int, low_channels: int = 48,
                 channels: int = 256, bn_momentum: float = 0.1):
        super().__init__()
        self.low_block = conv_bn_relu(low_in_channels, low_channels, 1, bn_momentum=bn_momentum)
        self.refine = nn.Sequential(
            conv_bn_relu(in_channels + low_channels, channels, 3, bn_momentum=bn_momentum), nn.Dropout(0.5),
            conv_bn_relu(channels, channels, 3, bn_momentum=bn_momentum), nn.Dropout(0.1))
        self.classifier = nn.Conv2d(channels, num_classes, 3, padding=1, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor, low: Tensor) -> Tensor:
        low = self.low_block(low)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.refine(torch.cat([x, low], dim=1)))
