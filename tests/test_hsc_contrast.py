"""HSC contrast module: memories are checkpointed buffers, updated only in training (or when asked), and the
module runs at the small sizes of CPU presets (where the reference's fixed top-k would not fit)."""
from __future__ import annotations

import pytest
import torch

from wsss.methods.hsc_contrast import HierarchicalSemanticContrast
from wsss.methods.hsc_losses import contrast_targets, second_view


def small_case(b=1, size=32, c=21):
    g = torch.Generator().manual_seed(3)
    h = size // 8
    labels = torch.zeros(b, c - 1)
    labels[:, 4] = 1
    image = torch.randn(b, 3, size, size, generator=g)
    image2, _ = second_view(image, torch.rand(b, 1, size, size, generator=g), size=size // 2)
    cam_rv1, cam_rv2 = torch.randn(b, c, h, h, generator=g), torch.randn(b, c, h // 2, h // 2, generator=g)
    feats = [torch.randn(b, d, s, s, generator=g, requires_grad=True) for d, s in ((8, h), (6, h), (8, h // 2),
                                                                                  (6, h // 2))]
    return labels, image2, cam_rv1, cam_rv2, feats


def test_memories_are_buffers_updated_in_training_only():
    labels, image2, cam_rv1, cam_rv2, feats = small_case()
    size = cam_rv2.shape[-1]
    contrast = HierarchicalSemanticContrast(roi_dim=6, pixel_dim=8, size=size)
    assert set(contrast.state_dict()) == {"roi_memory", "class_memory", "pixel_memory"}
    targets = contrast_targets(cam_rv1, cam_rv2, image2, labels, size=size)
    before = {k: v.clone() for k, v in contrast.state_dict().items()}
    losses = contrast.eval()(*feats[:1], feats[1], feats[2], feats[3], targets, labels)
    assert all(torch.equal(before[k], v) for k, v in contrast.state_dict().items())
    losses = contrast.train()(feats[0], feats[1], feats[2], feats[3], targets, labels)
    assert all(not torch.equal(before[k], v) for k, v in contrast.state_dict().items())
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)


def test_unknown_keys_are_errors():
    with pytest.raises(ValueError, match="unknown keys"):
        HierarchicalSemanticContrast(class_top_k=3)
