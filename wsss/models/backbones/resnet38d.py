"""WideResNet-38 ("resnet38d"), the backbone of RTC, WS-FCN and HSC.

Module and parameter names are those of ``network/resnet38d.py`` in PSA / SEAM /
RTC / HSC and ``models/backbones/resnet38d.py`` in 1-stage-wseg / ws-fcn
(``conv1a``, ``b2`` ... ``b7``, ``bn7``; inside a block ``bn_branch2a``,
``conv_branch2a``, ``bn_branch2b1``, ``conv_branch2b1`` [, ``bn_branch2b2``,
``conv_branch2b2``] and ``conv_branch1``), so the converted MXNet ImageNet weights
and the released checkpoints load key for key. Output stride 8: b5 uses dilation
2, b6/b7 dilation 4.

Features returned (shallow to deep); the seed repos disagree on what "conv3" is,
so both variants are exposed under distinct names:

====== ======== ====== ===========================================================
key    channels stride meaning
====== ======== ====== ===========================================================
b3     256      4      raw output of block b3_2 (1-stage-wseg / ws-fcn ``conv3``)
conv3  256      4      relu(b4.bn_branch2a(b3)): the pre-activation of b3's output
                       (SEAM / RTC ``conv3``)
conv4  512      8      relu(b5.bn_branch2a(b4_5 output)) (SEAM / RTC / HSC ``conv4``)
conv5  1024     8      relu(b6.bn_branch2a(b5_2 output)) (``conv5``)
conv6  4096     8      relu(bn7(b7 output)), the final feature (``conv6``)
====== ======== ====== ===========================================================

Freezing follows the seed repos and is switchable: the parameters of the modules
named in ``frozen`` never train (RTC / wseg / ws-fcn: conv1a, b2, b2_1, b2_2; SEAM
/ PSA / HSC: conv1a only), and with ``bn_eval`` every BatchNorm stays in eval mode
with its affine parameters fixed (all of them do this, RTC/SEAM in ``Net.train``,
wseg/ws-fcn through ``_fix_running_stats(self, fix_params=True)``). BatchNorms in
frozen modules are always in eval mode.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .base import BACKBONES, Backbone, set_bn_eval

SEED_FROZEN = ("conv1a", "b2", "b2_1", "b2_2")


class PreActBlock(nn.Module):
    """Two 3x3 convs with pre-activation BN-ReLU (blocks b2 .. b5_2)."""

    def __init__(self, cin: int, cmid: int, cout: int, stride: int = 1, first_dilation: int | None = None,
                 dilation: int = 1):
        super().__init__()
        first_dilation = dilation if first_dilation is None else first_dilation
        self.same_shape = cin == cout and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(cin)
        self.conv_branch2a = nn.Conv2d(cin, cmid, 3, stride, padding=first_dilation, dilation=first_dilation,
                                       bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(cmid)
        self.conv_branch2b1 = nn.Conv2d(cmid, cout, 3, padding=dilation, dilation=dilation, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return the block output and the BN-ReLU of its input (the repos' ``get_x_bn_relu``)."""
        pre = F.relu(self.bn_branch2a(x))
        shortcut = x if self.same_shape else self.conv_branch1(pre)
        y = self.conv_branch2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(pre))))
        return shortcut + y, pre


class PreActBottleneck(nn.Module):
    """1x1 - 3x3 - 1x1 pre-activation bottleneck with dropout (blocks b6, b7)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1, dropout: float = 0.0):
        super().__init__()
        self.same_shape = cin == cout and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(cin)
        self.conv_branch2a = nn.Conv2d(cin, cout // 4, 1, stride, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(cout // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(cout // 4, cout // 2, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(cout // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(cout // 2, cout, 1, bias=False)
        # The reference always applies conv_branch1 here (b6 and b7 both change width).
        self.conv_branch1 = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = F.relu(self.bn_branch2a(x))
        shortcut = self.conv_branch1(pre)
        y = self.conv_branch2a(pre)
        y = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(y))))
        y = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(y))))
        return shortcut + y, pre


class ResNet38d(Backbone):
    """WideResNet-38 with dilation, output stride 8 (see the module docstring for outputs)."""

    channels = OrderedDict(b3=256, conv3=256, conv4=512, conv5=1024, conv6=4096)
    strides = OrderedDict(b3=4, conv3=4, conv4=8, conv5=8, conv6=8)

    def __init__(self, frozen: Sequence[str] = SEED_FROZEN, bn_eval: bool = True):
        super().__init__()
        self.conv1a = nn.Conv2d(3, 64, 3, padding=1, bias=False)

        self.b2 = PreActBlock(64, 128, 128, stride=2)
        self.b2_1 = PreActBlock(128, 128, 128)
        self.b2_2 = PreActBlock(128, 128, 128)

        self.b3 = PreActBlock(128, 256, 256, stride=2)
        self.b3_1 = PreActBlock(256, 256, 256)
        self.b3_2 = PreActBlock(256, 256, 256)

        self.b4 = PreActBlock(256, 512, 512, stride=2)
        self.b4_1 = PreActBlock(512, 512, 512)
        self.b4_2 = PreActBlock(512, 512, 512)
        self.b4_3 = PreActBlock(512, 512, 512)
        self.b4_4 = PreActBlock(512, 512, 512)
        self.b4_5 = PreActBlock(512, 512, 512)

        self.b5 = PreActBlock(512, 512, 1024, first_dilation=1, dilation=2)
        self.b5_1 = PreActBlock(1024, 512, 1024, dilation=2)
        self.b5_2 = PreActBlock(1024, 512, 1024, dilation=2)

        self.b6 = PreActBottleneck(1024, 2048, dilation=4, dropout=0.3)
        self.b7 = PreActBottleneck(2048, 4096, dilation=4, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(4096)

        unknown = [n for n in frozen if not isinstance(getattr(self, n, None), nn.Module)]
        if unknown:
            raise ValueError(f"resnet38d: cannot freeze unknown modules {unknown}; "
                             f"use names like {list(SEED_FROZEN)}")
        self.frozen = tuple(frozen)
        self.bn_eval = bool(bn_eval)
        for name in self.frozen:
            for p in getattr(self, name).parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "ResNet38d":
        super().train(mode)
        if self.bn_eval:
            set_bn_eval(self)
        for name in self.frozen:
            set_bn_eval(getattr(self, name))
        return self

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.conv1a(x)
        for blk in (self.b2, self.b2_1, self.b2_2, self.b3, self.b3_1, self.b3_2):
            x, _ = blk(x)
        b3 = x
        x, conv3 = self.b4(x)
        for blk in (self.b4_1, self.b4_2, self.b4_3, self.b4_4, self.b4_5):
            x, _ = blk(x)
        x, conv4 = self.b5(x)
        x, _ = self.b5_1(x)
        x, _ = self.b5_2(x)
        x, conv5 = self.b6(x)
        x, _ = self.b7(x)
        conv6 = F.relu(self.bn7(x))
        return OrderedDict(b3=b3, conv3=conv3, conv4=conv4, conv5=conv5, conv6=conv6)


@BACKBONES.register("resnet38d")
def resnet38d(frozen: Sequence[str] = SEED_FROZEN, bn_eval: bool = True) -> ResNet38d:
    return ResNet38d(frozen=frozen, bn_eval=bn_eval)
