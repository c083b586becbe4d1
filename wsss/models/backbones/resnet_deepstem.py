"""DeepLab ResNet with the three-convolution ("deep") stem.

The network of SPML (``spml/models/backbones/resnet.py``, ``ResnetBackbone``) and
of the DeepLab v2 second stage of RTC and HSC (Yude Wang's ``lib/net/backbone/
resnet.py`` with ``deep_base=True``). Key names are SPML's without its
``resnet_backbone.`` prefix: ``conv1.conv1.{0,1,3,4,6}``, ``conv1.bn1``,
``res{2..5}.<i>.{conv1,bn1,conv2,bn2,conv3,bn3}`` and ``res{k}.0.downsample.{0,1}``.
The ImageNet files of this architecture (EMANet's ``resnet-101-cuhk.pth``,
PyTorch-Encoding's ``resnet101s``) use ``conv1.N / bn1 / layerK`` names; the
loader in :mod:`wsss.checkpoints.imagenet` renames them.

Output stride 8/16/32 by dilation with the reference's rule for the first block
of a dilated stage: dilation 1 when the stage's dilation is 2, dilation 2 when it
is 4 (later blocks use the stage dilation). BN momentum defaults to SPML's 3e-4.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial

from torch import Tensor, nn

from .base import BACKBONES, Backbone, set_bn_eval

# output stride -> (strides, dilations) of res2..res5, as SPML / Yude Wang build them
_LAYOUT = {8: ((1, 2, 1, 1), (1, 1, 2, 4)), 16: ((1, 2, 2, 1), (1, 1, 1, 2)), 32: ((1, 2, 2, 2), (1, 1, 1, 1))}
_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None,
                 bn_momentum: float):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


class DeepStem(nn.Module):
    """conv3x3/2 (64) - conv3x3 (64) - conv3x3 (128), BN-ReLU, max-pool: stride 4."""

    def __init__(self, bn_momentum: float):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64, momentum=bn_momentum), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64, momentum=bn_momentum), nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, 3, 1, 1, bias=False),
        )
        self.bn1 = nn.BatchNorm2d(128, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


class ResNetDeepStem(Backbone):
    """Deep-stem ResNet returning ``res2..res5`` (strides 4, 8 and the dilated rest)."""

    def __init__(self, depth: int = 101, output_stride: int = 8, bn_momentum: float = 3e-4,
                 frozen_bn: bool = False):
        super().__init__()
        if output_stride not in _LAYOUT:
            raise ValueError(f"output_stride must be one of {sorted(_LAYOUT)}, got {output_stride}")
        if depth not in _BLOCKS:
            raise ValueError(f"unsupported depth {depth}; choose from {sorted(_BLOCKS)}")
        strides, dilations = _LAYOUT[output_stride]
        self.conv1 = DeepStem(bn_momentum)
        cin, total = 128, 4
        self.channels, self.strides = OrderedDict(), OrderedDict()
        for i, (n, s, d) in enumerate(zip(_BLOCKS[depth], strides, dilations)):
            planes = 64 * 2 ** i
            downsample = None
            if s != 1 or cin != planes * 4:
                downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, s, bias=False),
                                           nn.BatchNorm2d(planes * 4, momentum=bn_momentum))
            first_dilation = 1 if d <= 2 else d // 2
            blocks = [Bottleneck(cin, planes, s, first_dilation, downsample, bn_momentum)]
            cin = planes * 4
            blocks += [Bottleneck(cin, planes, 1, d, None, bn_momentum) for _ in range(1, n)]
            name = f"res{i + 2}"
            setattr(self, name, nn.Sequential(*blocks))
            total *= s
            self.channels[name], self.strides[name] = cin, total
        self._init_weights()
        self.frozen_bn = bool(frozen_bn)
        if self.frozen_bn:
            set_bn_eval(self)

    def _init_weights(self) -> None:
        """He init with fan-out as the reference (used when no ImageNet file is given)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def train(self, mode: bool = True) -> "ResNetDeepStem":
        super().train(mode)
        if self.frozen_bn:
            set_bn_eval(self)
        return self

    def stem(self, x: Tensor) -> Tensor:
        return self.conv1(x)


for _depth in (101, 50):
    BACKBONES.register(f"resnet{_depth}_deepstem")(partial(ResNetDeepStem, depth=_depth))
