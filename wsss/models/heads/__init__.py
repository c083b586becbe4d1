"""Segmentation heads, built by name from a backbone's feature description.

A head maps the backbone's ``OrderedDict`` of features to class logits at the resolution of the
feature it reads (the caller upsamples). Registered heads (``HEADS``):

* ``aspp_v2``: DeepLab v2 - summed dilated 3x3 classifiers on the final feature (6/12/18/24);
* ``aspp_v3``: DeepLab v3 ASPP (+ image pooling) -> dropout -> 1x1 classifier. With dilations
  6/12/18/24 this is the "DeepLab v2" of RTC's and HSC's second stage (Yude Wang's code);
* ``deeplabv3plus``: DeepLab v3 ASPP + the v3+ decoder on a stride-4 low-level feature.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from torch import Tensor, nn

from wsss.registry import Registry

from .aspp import ASPPv2, ASPPv3, conv_bn_relu
from .deeplabv3plus import DeepLabV3PlusDecoder

HEADS: Registry[nn.Module] = Registry("head")


def _final(channels: Mapping[str, int]) -> str:
    return list(channels)[-1]


def _low_level_key(channels: Mapping[str, int], strides: Mapping[str, int], key: Optional[str]) -> str:
    if key is not None:
        if key not in channels:
            raise KeyError(f"low-level feature '{key}' is not a backbone output; outputs: {list(channels)}")
        return key
    candidates = [k for k in channels if strides[k] == 4] or [min(channels, key=lambda k: strides[k])]
    return candidates[-1]


class ASPPv2Head(nn.Module):
    def __init__(self, channels: Mapping[str, int], strides: Mapping[str, int], num_classes: int,
                 dilations: Sequence[int] = (6, 12, 18, 24)):
        super().__init__()
        self.key = _final(channels)
        self.aspp = ASPPv2(channels[self.key], num_classes, dilations)

    def forward(self, feats: Mapping[str, Tensor]) -> Tensor:
        return self.aspp(feats[self.key])


class ASPPv3Head(nn.Module):
    def __init__(self, channels: Mapping[str, int], strides: Mapping[str, int], num_classes: int,
                 dilations: Sequence[int] = (1, 6, 12, 18), width: int = 256, image_pool: bool = True,
                 bn_momentum: float = 0.1, dropout: float = 0.5):
        super().__init__()
        self.key = _final(channels)
        self.aspp = ASPPv3(channels[self.key], width, dilations, image_pool, bn_momentum, dropout)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(width, num_classes, 1)
        nn.init.kaiming_normal_(self.classifier.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.classifier.bias)

    def forward(self, feats: Mapping[str, Tensor]) -> Tensor:
        return self.classifier(self.dropout(self.aspp(feats[self.key])))


class DeepLabV3PlusHead(nn.Module):
    def __init__(self, channels: Mapping[str, int], strides: Mapping[str, int], num_classes: int,
                 dilations: Sequence[int] = (1, 6, 12, 18), width: int = 256, low_level: Optional[str] = None,
                 low_channels: int = 48, bn_momentum: float = 0.1, dropout: float = 0.5):
        super().__init__()
        self.key = _final(channels)
        self.low_key = _low_level_key(channels, strides, low_level)
        self.aspp = ASPPv3(channels[self.key], width, dilations, True, bn_momentum, dropout)
        self.decoder = DeepLabV3PlusDecoder(channels[self.low_key], width, num_classes, low_channels, width,
                                            bn_momentum)

    def forward(self, feats: Mapping[str, Tensor]) -> Tensor:
        return self.decoder(self.aspp(feats[self.key]), feats[self.low_key])


HEADS.register("aspp_v2")(ASPPv2Head)
HEADS.register("aspp_v3")(ASPPv3Head)
HEADS.register("deeplabv3plus")(DeepLabV3PlusHead)


def build_head(name: str, channels: Mapping[str, int], strides: Mapping[str, int], num_classes: int,
               **kwargs) -> nn.Module:
    """Build a registered head for a backbone described by its ``channels`` / ``strides``."""
    return HEADS.build(name, channels=channels, strides=strides, num_classes=num_classes, **kwargs)


__all__ = ["HEADS", "ASPPv2", "ASPPv3", "DeepLabV3PlusDecoder", "build_head", "conv_bn_relu"]
