"""One HSC training iteration against the reference (Wu0409/HSC_WSSS@402ee60, run once outside the repo; see
tests/fixtures/hsc/train/README.md): every loss term, the gradients w.r.t. the CAMs and features fed in, the six
memory banks after the step, and the PCM head, to 1e-5."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hsc_train_case import checksums, make_case, make_pcm_case, second_view_inputs
from wsss.methods.hsc_contrast import HierarchicalSemanticContrast
from wsss.methods.hsc_losses import (contrast_targets, hsc_baseline_losses, pcm_features, pcm_refine, pcm_seed,
                                     second_view)

FIXTURE = Path(__file__).parent / "fixtures" / "hsc" / "train"
LEAVES = ("cam1", "cam_rv1", "cam2", "cam_rv2", "feat1_1", "feat1_2", "feat2_1", "feat2_2")
BANKS = ("memobank1", "memobank_fb", "memobank1_p", "memobank2", "memobank1_fb", "memobank2_p")


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURE / "reference.npz"))


def _same_inputs(case, which):
    want = json.loads((FIXTURE / "checksums.json").read_text())[which]
    got = checksums(case)
    for k, (s, s2) in want.items():
        assert np.isclose(got[k][0], s, rtol=1e-9, atol=1e-6) and np.isclose(got[k][1], s2, rtol=1e-9), \
            f"the seeded input '{k}' differs from the one the fixture was made from (NumPy's generator changed?)"


def one_step(case):
    """Our losses on the case, as the lead's training_losses will call them."""
    torch.manual_seed(0)
    contrast = HierarchicalSemanticContrast().train()
    contrast.load_reference_memories({k: case[k] for k in BANKS})
    leaves = {k: case[k].clone().requires_grad_(True) for k in LEAVES}
    image2, saliency2 = second_view(case["image"], case["saliency"])
    losses = hsc_baseline_losses(leaves["cam1"], leaves["cam_rv1"], leaves["cam2"], leaves["cam_rv2"],
                                 case["saliency"], saliency2, case["labels"])
    targets = contrast_targets(leaves["cam_rv1"], leaves["cam_rv2"], image2, case["labels"])
    losses.update(contrast(leaves["feat1_1"], leaves["feat1_2"], leaves["feat2_1"], leaves["feat2_2"], targets,
                           case["labels"]))
    losses["total"] = sum(losses.values())
    losses["total"].backward()
    return losses, leaves, contrast


def test_one_training_step_equals_the_reference(reference):
    case = make_case()
    _same_inputs(case, "case")
    losses, leaves, contrast = one_step(case)
    for k, v in losses.items():
        assert abs(float(v) - float(reference[f"loss_{k}"])) < 1e-5, (k, float(v), float(reference[f"loss_{k}"]))
    for k in LEAVES:
        want = reference[f"grad_{k}"]
        assert np.abs(want).max() > 1e-7, k  # every input receives a gradient
        # 1e-5 relative to the gradient's scale (stricter than 1e-5 absolute: these gradients are ~1e-4)
        np.testing.assert_allclose(leaves[k].grad.numpy(), want, atol=1e-5 * np.abs(want).max(), rtol=1e-4,
                                   err_msg=k)
    mine = {"memobank_fb": contrast.roi_memory[0], "memobank1_fb": contrast.roi_memory[1],
            "memobank1": contrast.class_memory[0], "memobank2": contrast.class_memory[1],
            "memobank1_p": contrast.pixel_memory[0], "memobank2_p": contrast.pixel_memory[1]}
    for k in BANKS:
        assert not np.allclose(reference[f"memory_{k}"], case[k].numpy()), k  # the step moved every memory
        np.testing.assert_allclose(mine[k].numpy(), reference[f"memory_{k}"], atol=1e-5, rtol=1e-5, err_msg=k)
    # class memory: the background row is never updated and classes absent from the batch keep their rows
    assert torch.equal(contrast.class_memory[:, 20], torch.stack([case["memobank1"][20], case["memobank2"][20]]))


def test_second_view_is_the_reference_resize():
    case = make_case()
    a, b = second_view(case["image"], case["saliency"])
    c, d = second_view_inputs(case["image"], case["saliency"])
    assert a.shape == (2, 3, 128, 128) and torch.equal(a, c) and torch.equal(b, d)


def test_pcm_equals_the_reference(reference):
    case = make_pcm_case()
    _same_inputs(case, "pcm")
    weights = {k: case[k].clone().requires_grad_(True) for k in ("f8_3", "f8_4", "f9")}
    feats = pcm_features(case["image"], case["conv4"], case["conv5"], weights["f8_3"], weights["f8_4"])
    cam_rv = pcm_refine(pcm_seed(case["cam"]), feats, weights["f9"])
    np.testing.assert_allclose(cam_rv.detach().numpy(), reference["pcm_cam_rv"], atol=1e-5, rtol=1e-5)
    (cam_rv * torch.linspace(-1, 1, cam_rv.numel()).view_as(cam_rv)).sum().backward()
    np.testing.assert_allclose(weights["f9"].grad.numpy(), reference["pcm_grad_f9"], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(weights["f8_3"].grad.numpy(), reference["pcm_grad_f8_3"], atol=1e-5, rtol=1e-4)


def test_feature_downsampling_is_the_reference_bilinear():
    import torch.nn.functional as F

    from wsss.methods.hsc_losses import downsample_features

    for h, w in ((56, 56), (18, 23), (17, 16)):
        x = torch.randn(2, 5, h, w)
        want = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=True)
        torch.testing.assert_close(downsample_features(x, 16), want, atol=1e-6, rtol=1e-6)
    x = torch.randn(1, 2, 16, 16)
    assert downsample_features(x, 16) is x
