"""Atrous spatial pyramid pooling heads of DeepLab v2 and v3.

* :class:`ASPPv2` - DeepLab v2: parallel dilated 3x3 convolutions that each predict the output
  directly and are **summed** (dilations 6/12/18/24). Submodule names ``aspp_{1..4}.0`` are SPML's
  (``spml/models/heads/spp.py``), so its released embedding heads load as they are. Optional BN/ReLU
  per branch as in SPML's ``create_convs``.
* :class:`ASPPv3` - DeepLab v3: conv-BN-ReLU branches (1x1 for dilation 1, dilated 3x3 otherwise),
  an image-pooling branch, concatenation, a 1x1 projection, BN-ReLU and dropout. With dilations
  6/12/18/24 and pooling it is the "deeplabv2" of Yude Wang's segmentation code used for RTC's and
  HSC's second stage (``lib/net/operators/ASPP.py``); with 1/6/12/18 it is RecurSeed's
  ``ASPP_For_DeepLabv3`` (output stride 16; 1/12/24/36 at output stride 8).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ASPPv2(nn.Module):
    """Sum of parallel dilated convolutions (DeepLab v2 classifier / SPML embedding head)."""

    def __init__(self, in_channels: int, out_channels: int, dilations: Sequence[int] = (6, 12, 18, 24),
                 bn: bool = False, relu: bool = False, init_std: float | None = 0.01):
        super().__init__()
        self.dilations = tuple(dilations)
        for i, d in enumerate(self.dilations):
            layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3 if d > 1 else 1,
                                                 padding=d if d > 1 else 0, dilation=d, bias=not bn)]
            if bn:
                layers.append(nn.BatchNorm2d(out_channels))
            if relu:
                layers.append(nn.ReLU(inplace=True))
            setattr(self, f"aspp_{i + 1}", nn.Sequential(*layers))
        if init_std is not None:  # DeepLab v2's classifier init: N(0, 0.01), zero bias
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, 0.0, init_std)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.aspp_1(x)
        for i in range(2, len(self.dilations) + 1):
            out = out + getattr(self, f"aspp_{i}")(x)
        return out


def conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1, bn_momentum: float = 0.1) -> nn.Sequential:
    pad = dilation * (kernel - 1) // 2
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout, momentum=bn_momentum), nn.ReLU(inplace=True))


class ASPPv3(nn.Module):
    """Concatenated conv-BN-ReLU branches + image pooling, projected by 1x1 conv-BN-ReLU + dropout."""

    def __init__(self, in_channels: int, out_channels: int = 256, dilations: Sequence[int] = (1, 6, 12, 18),
                 image_pool: bool = True, bn_momentum: float = 0.1, dropout: float = 0.5):
        super().__init__()
        self.branches = nn.ModuleList(
            conv_bn_relu(in_channels, out_channels, 1 if d == 1 else 3, d, bn_momentum) for d in dilations)
        self.image_pool = (nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn_relu(in_channels, out_channels, 1,
                                                                              bn_momentum=bn_momentum))
                           if image_pool else None)
        n = len(dilations) + int(image_pool)
        self.project = nn.Sequential(conv_bn_relu(n * out_channels, out_channels, 1, bn_momentum=bn_momentum),
                                     nn.Dropout(dropout))
        self.out_channels = out_channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        feats = [b(x) for b in self.branches]
        if self.image_pool is not None:
            pooled = self.image_pool(x)
            feats.append(F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=True))
        return self.project(torch.cat(feats, dim=1))
