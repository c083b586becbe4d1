"""DeepLab heads: v2 sums dilated classifiers, v3 concatenates with image pooling, v3+ uses a low-level skip."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from wsss.models.heads import ASPPv2, ASPPv3, DeepLabV3PlusDecoder, build_head


def test_aspp_v2_is_the_sum_of_dilated_convs_with_spml_names():
    torch.manual_seed(0)
    head = ASPPv2(8, 5)
    names = sorted(k for k, _ in head.named_parameters())
    assert names == sorted(f"aspp_{i}.0.{p}" for i in range(1, 5) for p in ("weight", "bias"))
    x = torch.randn(2, 8, 30, 30)
    expected = sum(F.conv2d(x, getattr(head, f"aspp_{i + 1}")[0].weight, getattr(head, f"aspp_{i + 1}")[0].bias,
                            padding=d, dilation=d) for i, d in enumerate((6, 12, 18, 24)))
    torch.testing.assert_close(head(x), expected)


def test_aspp_v3_branches_pooling_and_resolution():
    head = ASPPv3(16, 8, dilations=(1, 6, 12, 18)).eval()
    assert [b[0].kernel_size for b in head.branches] == [(1, 1), (3, 3), (3, 3), (3, 3)]
    assert [b[0].dilation for b in head.branches] == [(1, 1), (6, 6), (12, 12), (18, 18)]
    assert head.project[0][0].in_channels == 5 * 8
    x = torch.randn(2, 16, 9, 11)
    assert head(x).shape == (2, 8, 9, 11)
    # the image-pooling branch sees the global context: a change far away alters every position
    y = x.clone()
    y[:, :, 0, 0] += 100.0
    with torch.no_grad():
        diff = (head(x) - head(y)).abs()[:, :, -1, -1].sum()
    assert diff > 0
    no_pool = ASPPv3(16, 8, dilations=(6, 12, 18, 24), image_pool=False)
    assert no_pool.image_pool is None and no_pool.project[0][0].in_channels == 4 * 8


def test_v3plus_decoder_upsamples_to_low_level_resolution():
    dec = DeepLabV3PlusDecoder(low_in_channels=12, in_channels=8, num_classes=3).eval()
    out = dec(torch.randn(2, 8, 4, 4), torch.randn(2, 12, 16, 16))
    assert out.shape == (2, 3, 16, 16)
    assert dec.low_block[0].out_channels == 48 and dec.classifier.bias is None


@pytest.mark.parametrize("name,kwargs,stride", [("aspp_v2", {}, 8), ("aspp_v3", {"dilations": (6, 12, 18, 24)}, 8),
                                                ("deeplabv3plus", {}, 4)])
def test_build_head_on_a_backbone_description(name, kwargs, stride):
    channels = OrderedDict(layer1=12, layer2=16, layer4=24)
    strides = OrderedDict(layer1=4, layer2=8, layer4=8)
    head = build_head(name, channels, strides, num_classes=4, **kwargs)
    feats = OrderedDict(layer1=torch.randn(2, 12, 16, 16), layer2=torch.randn(2, 16, 8, 8),
                        layer4=torch.randn(2, 24, 8, 8))
    out = head(feats)
    assert out.shape == (2, 4, 64 // stride, 64 // stride)  # features of a 64 px image
    out.sum().backward()
    assert all(p.grad is not None for p in head.parameters())
    if name == "deeplabv3plus":
        assert head.low_key == "layer1"
        with pytest.raises(KeyError, match="res2"):
            build_head(name, channels, strides, num_classes=4, low_level="res2")
