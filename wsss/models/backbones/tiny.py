"""A few-thousand-parameter CNN so tests and the default CPU run finish in seconds."""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import nn

from .base import BACKBONES, Backbone


def _conv_bn_relu(cin: int, cout: int, stride: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyNet(Backbone):
    """Four conv stages (``stage1..stage4``); strides 2/4/8/8 with the last stage dilated."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 96), in_channels: int = 3):
        super().__init__()
        strides = (2, 2, 2, 1)
        dilations = (1, 1, 1, 2)
        cin, total = in_channels, 1
        self.channels, self.strides = OrderedDict(), OrderedDict()
        for i, (w, s, d) in enumerate(zip(widths, strides, dilations)):
            total *= s
            name = f"stage{i + 1}"
            setattr(self, name, nn.Sequential(_conv_bn_relu(cin, w, s), _conv_bn_relu(w, w, 1, d)))
            self.channels[name], self.strides[name] = w, total
            cin = w


@BACKBONES.register("tiny")
def tiny(**kwargs) -> TinyNet:
    return TinyNet(**kwargs)
