"""The backbone contract every network in the registry follows.

``forward(x)`` returns an ordered dict of feature maps, shallow to deep; the last
entry is the final feature. ``channels`` and ``strides`` describe each entry so
heads and methods can be built without running the network.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict

from torch import Tensor, nn

from wsss.registry import Registry

BACKBONES: Registry[nn.Module] = Registry("backbone")


class Backbone(nn.Module):
    channels: Dict[str, int]
    strides: Dict[str, int]

    @property
    def final_key(self) -> str:
        return list(self.channels)[-1]

    @property
    def out_channels(self) -> int:
        return self.channels[self.final_key]

    def stem(self, x: Tensor) -> Tensor:
        """What runs before the first listed stage (none by default)."""
        return x

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        """The stem, then each stage named in ``channels`` in order, keeping every stage's output."""
        x = self.stem(x)
        out = OrderedDict()
        for name in self.channels:
            x = getattr(self, name)(x)
            out[name] = x
        return out


def set_bn_eval(module: nn.Module) -> None:
    """Put every BatchNorm in eval mode and stop its affine params from training."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
