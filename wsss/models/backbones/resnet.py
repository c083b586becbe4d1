"""torchvision-style ResNets whose ``state_dict`` keys equal torchvision's.

The layers are torchvision's own modules re-parented onto a :class:`Backbone`, so a
torchvision ImageNet ``.pth`` loads as it is (``fc.*`` is ignored). Output stride
8/16/32 replaces the stride of the last stages by dilation, as DeepLab does.

``dilation_style`` says how: ``torchvision`` is ``replace_stride_with_dilation`` (each dilated stage's first
block keeps the previous stage's dilation); ``recurseed`` is RecurSeed's ``build_resnet``
(OFRIN/RecurSeed_and_EdgePredictMix@df538e2 ``core/backbones/resnet/__init__.py``, ``model.py``
``_make_layer``): the first block of every stage at dilation 1, the others at 2 (layer3) and 4 (layer4) for
output stride 8, and **no dilation at all** for output stride 16 (layer4 only loses its stride).
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from .base import BACKBONES, Backbone, set_bn_eval

_DILATE = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}
#: RecurSeed's build_resnet: dilation of the non-first blocks of layer2..layer4 per output stride
_RECURSEED_DILATIONS = {32: (1, 1, 1), 16: (1, 1, 1), 8: (1, 2, 4)}
DILATION_STYLES = ("torchvision", "recurseed")


class ResNet(Backbone):
    """ResNet trunk returning ``layer1..layer4`` (strides 4, 8, 16/8, 32/16/8)."""

    def __init__(self, depth: int = 50, output_stride: int = 16, frozen_bn: bool = False,
                 bn_momentum: float = 0.1, frozen_stem: bool = False, dilation_style: str = "torchvision"):
        super().__init__()
        if dilation_style not in DILATION_STYLES:
            raise ValueError(f"dilation_style must be one of {DILATION_STYLES}, got {dilation_style!r}")
        if output_stride not in _DILATE:
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        builders = {18: tv_resnet.resnet18, 34: tv_resnet.resnet34, 50: tv_resnet.resnet50,
                    101: tv_resnet.resnet101, 152: tv_resnet.resnet152}
        if depth not in builders:
            raise ValueError(f"unsupported ResNet depth {depth}; choose from {sorted(builders)}")
        dilate = _DILATE[output_stride]
        if depth < 50 and any(dilate):
            # BasicBlock refuses dilation; emulate it by keeping stride 1 on the last stages.
            net = builders[depth](weights=None)
            self._dilate_basic(net, dilate)
        else:
            net = builders[depth](weights=None, replace_stride_with_dilation=dilate)
            if dilation_style == "recurseed":
                self._recurseed_dilations(net, _RECURSEED_DILATIONS[output_stride])
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(net, name))
        width = [64, 128, 256, 512]
        expansion = 4 if depth >= 50 else 1
        self.channels = OrderedDict((f"layer{i + 1}", w * expansion) for i, w in enumerate(width))
        stride, strides = 4, OrderedDict()
        for i, key in enumerate(self.channels):
            if i > 0 and not dilate[i - 1]:
                stride *= 2
            strides[key] = stride
        self.strides = strides
        self.frozen_bn = frozen_bn
        self.frozen_stem = frozen_stem
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = bn_momentum
        if frozen_bn:
            set_bn_eval(self)
        if frozen_stem:
            for p in list(self.conv1.parameters()) + list(self.bn1.parameters()):
                p.requires_grad_(False)

    @staticmethod
    def _dilate_basic(net: nn.Module, dilate) -> None:
        dilation = 1
        for flag, layer in zip(dilate, (net.layer2, net.layer3, net.layer4)):
            if not flag:
                continue
            dilation *= 2
            for block in layer:
                for conv in (block.conv1, block.conv2):
                    if conv.stride == (2, 2):
                        conv.stride = (1, 1)
                    else:
                        conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)
                if block.downsample is not None:
                    block.downsample[0].stride = (1, 1)

    @staticmethod
    def _recurseed_dilations(net: nn.Module, dilations) -> None:
        """RecurSeed's ``_make_layer``: block 0 of a stage at dilation 1, the others at the stage's dilation."""
        for dilation, layer in zip(dilations, (net.layer2, net.layer3, net.layer4)):
            for i, block in enumerate(layer):
                d = 1 if i == 0 else dilation
                block.conv2.dilation, block.conv2.padding = (d, d), (d, d)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_bn:
            set_bn_eval(self)
        return self

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


for _depth in (18, 50, 101):
    BACKBONES.register(f"resnet{_depth}")(partial(ResNet, depth=_depth))
