"""WS-FCN's decoder parts: flexible context aggregation (FCA) and semantically consistent feature fusion.

Written after ChunyanWang1/ws-fcn@73927f5 ``models/mods/fca.py`` (``FCA``, ``GCN_Module``, ``ChannelAttention``,
``SpatialAttention``) and ``models/mods/sf2.py`` (``AlignModule``, ``SF2``). Module and parameter names are the
reference's, so the released state dict maps onto them key for key (``wsss/checkpoints/wsfcn.py``). Widths are
parameters (the reference hard-codes 256 / 128 and the ResNet-38 channels) so a small backbone can use them.

Differences from the reference that do not change outputs: the factorised branches have no ``bn`` (the
reference creates one per branch and never calls it; the importer drops those keys); the unused ``dilations``
list and the unused bilinear resize in ``SF2.forward`` (both inputs are already the low-level size) are left out.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FactorisedLargeKernel(nn.Module):
    """``GCN_Module``: (k x 1 then 1 x k) + (1 x k then k x 1), dilated, bias-free, "same" size."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int):
        super().__init__()
        pad = dilation * (kernel // 2)  # the reference's dilation1: 0, d, 2d, 3d for k = 1, 3, 5, 7
        self.conv1_1 = nn.Conv2d(cin, cout, (kernel, 1), padding=(pad, 0), dilation=dilation, bias=False)
        self.conv1_2 = nn.Conv2d(cout, cout, (1, kernel), padding=(0, pad), dilation=dilation, bias=False)
        self.conv2_1 = nn.Conv2d(cin, cout, (1, kernel), padding=(0, pad), dilation=dilation, bias=False)
        self.conv2_2 = nn.Conv2d(cout, cout, (kernel, 1), padding=(pad, 0), dilation=dilation, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1_2(self.conv1_1(x)) + self.conv2_2(self.conv2_1(x))


class ChannelAttention(nn.Module):
    """sigmoid(MLP(avg pool) + MLP(max pool)), one MLP (1x1, ReLU, 1x1, no bias)."""

    def __init__(self, channels: int):
        super().__init__()
        self.sharedMLP = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.ReLU(),
                                       nn.Conv2d(channels, channels, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        avg = self.sharedMLP(F.adaptive_avg_pool2d(x, 1))
        peak = self.sharedMLP(F.adaptive_max_pool2d(x, 1))
        return torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """sigmoid(3x3 conv of [channel mean, channel max])."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.max(dim=1, keepdim=True).values], dim=1)
        return torch.sigmoid(self.conv(pooled))


class ContextAggregation(nn.Module):
    """FCA: four factorised large-kernel branches, each reweighted by one shared channel attention, plus an
    image-pooling branch; 1x1 fusion, BN (no ReLU), spatial attention as ``x * sa(x) + x``, dropout."""

    def __init__(self, cin: int, width: int = 256, kernels: Sequence[int] = (1, 3, 5, 7),
                 dilations: Sequence[int] = (1, 12, 24, 36), dropout: float = 0.5):
        super().__init__()
        if len(kernels) != 4 or len(dilations) != 4:
            raise ValueError(f"FCA has four branches: got kernels {list(kernels)}, dilations {list(dilations)}")
        self.sa = SpatialAttention()
        self.ca = ChannelAttention(width)
        for i, (k, d) in enumerate(zip(kernels, dilations), start=1):
            setattr(self, f"fca{i}", FactorisedLargeKernel(cin, width, int(k), int(d)))
        self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, width, 1, bias=False),
                                             nn.BatchNorm2d(width), nn.ReLU())
        self.conv1 = nn.Conv2d(5 * width, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.dropout = nn.Dropout(dropout)
        for m in self.modules():  # fca.py FCA._init_weight, SpatialAttention / ChannelAttention._init_weight
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        branches = []
        for branch in (self.fca1, self.fca2, self.fca3, self.fca4):
            y = branch(x)
            branches.append(self.ca(y) * y)
        pooled = self.global_avg_pool(x)
        branches.append(F.interpolate(pooled, size=branches[-1].shape[-2:], mode="bilinear", align_corners=True))
        y = self.bn1(self.conv1(torch.cat(branches, dim=1)))
        return self.dropout(self.sa(y) * y + y)


class FlowAlign(nn.Module):
    """``AlignModule``: a 2-channel flow from [deep projected and resized, shallow projected] warps the
    *original* deep feature onto the shallow grid (``grid_sample``, bilinear, zero padding, align_corners)."""

    def __init__(self, deep_channels: int, low_channels: int, width: int = 128):
        super().__init__()
        self.down_h = nn.Conv2d(deep_channels, width, 1, bias=False)
        self.down_l = nn.Conv2d(low_channels, width, 1, bias=False)
        self.flow_make = nn.Conv2d(2 * width, 2, 3, padding=1, bias=False)

    def forward(self, low: Tensor, deep: Tensor) -> Tensor:
        h, w = low.shape[-2:]
        d = F.interpolate(self.down_h(deep), size=(h, w), mode="bilinear", align_corners=False)
        flow = self.flow_make(torch.cat([d, self.down_l(low)], dim=1))
        return warp(deep, flow)


def warp(feature: Tensor, flow: Tensor) -> Tensor:
    """Sample ``feature`` at an identity grid of ``flow``'s size shifted by ``flow`` / (w, h) (``flow_warp``)."""
    n, _, h, w = flow.shape
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=flow.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=flow.dtype)
    base = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1)
    norm = torch.tensor([w, h], device=flow.device, dtype=flow.dtype)
    grid = base[None] + flow.permute(0, 2, 3, 1) / norm
    return F.grid_sample(feature, grid.to(feature.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


class TwoPathFusion(nn.Module):
    """``SF2``: a shallow path (``*h``) and a deep path (``*v``) of conv-BN-ReLU pairs, crossed through their
    product; returns (shallow, deep)."""

    def __init__(self, low_channels: int, width: int = 256):
        super().__init__()
        for path, cin in (("h", low_channels), ("v", width)):
            for i in range(1, 5):
                setattr(self, f"conv{i}{path}", nn.Conv2d(cin if i == 1 else width, width, 3, padding=1))
                setattr(self, f"bn{i}{path}", nn.BatchNorm2d(width))
        for m in self.modules():  # sf2.py weight_init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _cbr(self, name: str, x: Tensor) -> Tensor:
        return F.relu(getattr(self, "bn" + name)(getattr(self, "conv" + name)(x)))

    def forward(self, low: Tensor, deep: Tensor) -> tuple[Tensor, Tensor]:
        out1h = self._cbr("1h", low)
        out2h = self._cbr("2h", out1h)
        out1v = self._cbr("1v", deep)
        out2v = self._cbr("2v", out1v)
        fuse = out2h * out2v
        out4h = self._cbr("4h", self._cbr("3h", fuse) + out1h)
        out4v = self._cbr("4v", self._cbr("3v", fuse) + out1v)
        return out4h, out4v


def stochastic_gate(deep: Tensor, shallow: Tensor, psi: float, training: bool) -> Tensor:
    """``sg2.py StochasticGate``: at test ``(1-psi) deep + psi shallow``; in training every element takes the
    shallow feature with probability ``psi`` and otherwise the deep one, shifted so its expectation is ``deep``."""
    if not training:
        return (1 - psi) * deep + psi * shallow
    keep = (1 - psi) * F.dropout(torch.ones_like(deep), psi)  # 1 with probability 1 - psi, else 0
    deep = (deep - psi * shallow) / max(1e-8, 1 - psi)
    return keep * deep + (1 - keep) * shallow


def classifier(width: int, num_fg: int) -> nn.Sequential:
    """``last_conv``: (3x3 conv, BN, ReLU, dropout 0.5), (3x3 conv, BN, ReLU, dropout 0.1), 1x1 conv with bias."""
    layers = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                           nn.Dropout(0.5),
                           nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                           nn.Dropout(0.1),
                           nn.Conv2d(width, num_fg, 1))
    for m in layers:  # stage_net.py _init_decoder: conv2d() kaiming_normal_, bnorm() weight 1 bias 0
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return layers
