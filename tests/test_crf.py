"""Dense-CRF presets against independent re-computations of each seed repo's recipe.

Each ``_ref_*`` function below re-writes, with literal numbers copied from the seed repo,
the pydensecrf calls that repo makes (see the citations in ``conf/crf/*.yaml``); the
module under test must give the same label map bit for bit.
"""
from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf
import pytest
from pydensecrf.utils import unary_from_labels, unary_from_softmax

from wsss.postprocess.crf import (Background, CRFPreset, dense_crf, load_preset, refine, refine_many,
                                  stack_scores)

H, W = 48, 64
KEYS = [2, 14]  # 0-based fg indices (bird's neighbour "boat" = 3, "person" = 15)


def _scene(seed: int = 0):
    """A noisy two-object image and blurry, overlapping CAM-like scores for its two classes."""
    rng = np.random.default_rng(seed)
    image = np.full((H, W, 3), 40, np.float32)
    image[8:30, 6:30] = (220, 60, 40)
    image[20:44, 34:60] = (40, 90, 230)
    image += rng.normal(0, 25, image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    cam_a = np.exp(-(((yy - 18) / 12) ** 2 + ((xx - 16) / 14) ** 2))
    cam_b = np.exp(-(((yy - 32) / 12) ** 2 + ((xx - 45) / 15) ** 2))
    noise = rng.uniform(0, 0.25, (2, H, W)).astype(np.float32)
    fg = np.clip(np.stack([cam_a, cam_b]).astype(np.float32) + noise, 0, 1).astype(np.float32)
    return image, fg


def _crf_softmax(img, probs, t, g_sxy, g_compat, b_sxy, b_srgb, b_compat):
    n = probs.shape[0]
    d = dcrf.DenseCRF2D(W, H, n)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=g_sxy, compat=g_compat)
    d.addPairwiseBilateral(sxy=b_sxy, srgb=b_srgb, rgbim=np.copy(img), compat=b_compat)
    return np.array(d.inference(t)).reshape((n, H, W))


def _ref_present_power(img, fg, alpha, t, g_sxy, g_compat, b_sxy, b_srgb, b_compat):
    """SEAM / HSC ``_crf_with_alpha`` and RecurSeed ``DenseCRF.__call__(gamma=...)``."""
    v = np.array([fg[i] for i in range(len(KEYS))])
    bg_score = np.power(1 - np.max(v, axis=0, keepdims=True), alpha)
    q = _crf_softmax(img, np.concatenate((bg_score, v), axis=0), t, g_sxy, g_compat, b_sxy, b_srgb, b_compat)
    return q, np.array([0] + [k + 1 for k in KEYS])


def _ref_all_power(img, fg, alpha, t, g_sxy, g_compat, b_sxy, b_srgb, b_compat):
    """WS-FCN ``_crf_with_alpha`` (labels=21) and SPML ``pseudo_camrw_crf`` (cam_full_arr)."""
    full = np.zeros((21, H, W), np.float32)
    for i, k in enumerate(KEYS):
        full[k + 1] = fg[i]
    full[0] = np.power(1 - np.max(full[1:], axis=0, keepdims=True), alpha)
    return _crf_softmax(img, full, t, g_sxy, g_compat, b_sxy, b_srgb, b_compat), np.arange(21)


def _ref_rtc(img, fg):
    """RTC ``contrast_infer.py``: ``_crf`` then ``_crf_inference``."""
    tensor = np.zeros((21, H, W), np.float32)
    for i, k in enumerate(KEYS):
        tensor[k + 1] = fg[i]
    tensor[0, :, :] = 0.17
    predict = np.argmax(tensor, axis=0).astype(np.uint8)
    d = dcrf.DenseCRF2D(W, H, 21)
    d.setUnaryEnergy(unary_from_labels(predict, 21, gt_prob=0.7, zero_unsure=False))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(np.copy(img)), compat=10)
    return np.array(d.inference(10)).reshape((21, H, W)), np.arange(21)


def _recurseed_image(img):
    """RecurSeed's Normalize (float32, per channel) then Denormalize (float64, astype uint8: truncation)."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = np.asarray(img, np.float32)
    norm = np.empty_like(x)
    for c in range(3):
        norm[..., c] = (x[..., c] / 255. - mean[c]) / std[c]
    return ((norm * std + mean) * 255).astype(np.uint8)


REFERENCES = {
    "seam": lambda img, fg: _ref_present_power(img, fg, 4, 10, 3, 3, 80, 13, 10),
    "seam_ha": lambda img, fg: _ref_present_power(img, fg, 24, 10, 3, 3, 80, 13, 10),
    "hsc": lambda img, fg: _ref_present_power(img, fg, 7, 8, 3, 3, 80, 13, 10),
    "recurseed": lambda img, fg: _ref_present_power(_recurseed_image(img), fg, 2.0, 10, 1, 3, 67, 3, 4),
    "wsfcn": lambda img, fg: _ref_all_power(img, fg, 5, 10, 3, 3, 30, 13, 10),
    "spml": lambda img, fg: _ref_all_power(img, fg, 6, 10, 1, 3, 67, 3, 4),
    "rtc": _ref_rtc,
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_preset_matches_reference_recipe(name):
    image, fg = _scene()
    preset = load_preset(name)
    # the pipeline's bg rule must not matter: every seed preset brings its own background
    ours = refine(image, fg, KEYS, preset, bg=Background("threshold", 0.5), num_classes=21)
    ref_q, ref_ids = REFERENCES[name](image, fg)
    assert ours.dtype == np.uint8 and ours.shape == (H, W)
    np.testing.assert_array_equal(ours, ref_ids[np.argmax(ref_q, axis=0)])
    # same marginals too (label maps alone can hide e.g. a different iteration count)
    stack, ids = stack_scores(fg, KEYS, preset, bg=Background("threshold", 0.5), num_classes=21)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(dense_crf(image, stack, preset), ref_q, rtol=0, atol=1e-6)
    # the CRF did something: the result is not the argmax of its own unary
    bg_plain = refine(image, fg, KEYS, CRFPreset.from_config(
        {"name": "x", "enabled": False}), bg=preset.background, num_classes=21)
    assert (ours != bg_plain).mean() > 0.005


def test_presets_differ_from_each_other():
    image, fg = _scene(1)
    maps = {n: refine(image, fg, KEYS, load_preset(n), num_classes=21).tobytes() for n in REFERENCES}
    assert len(set(maps.values())) >= 5


def test_none_is_plain_argmax_with_pipeline_background():
    image, fg = _scene()
    none = load_preset("none")
    for t in (0.1, 0.3, 0.6):
        out = refine(image, fg, KEYS, none, bg=Background("threshold", t))
        stack = np.concatenate([np.full((1, H, W), t, np.float32), fg])
        np.testing.assert_array_equal(out, np.array([0, 3, 15])[np.argmax(stack, 0)])
    out = refine(image, fg, KEYS, none, bg=Background("power", alpha=0.5))
    bg = np.sqrt(1 - fg.max(0, keepdims=True))
    np.testing.assert_array_equal(out, np.array([0, 3, 15])[np.argmax(np.concatenate([bg, fg]), 0)])
    # ties go to the background (lower row), like SEAM's evaluation
    tie = refine(image, np.full((1, H, W), 0.2, np.float32), [0], none, bg=Background("threshold", 0.2))
    assert (tie == 0).all()


def test_preset_background_can_be_switched_to_pipeline_rule():
    image, fg = _scene()
    seam = load_preset("seam")
    own = CRFPreset.from_config({**_as_dict(seam), "background": None})
    low = refine(image, fg, KEYS, own, bg=Background("threshold", 0.05))
    high = refine(image, fg, KEYS, own, bg=Background("threshold", 0.9))
    assert (low == 0).sum() < (high == 0).sum()
    with pytest.raises(ValueError, match="no background rule"):
        refine(image, fg, KEYS, own, bg=None)


def _as_dict(preset):
    from dataclasses import asdict
    return asdict(preset)


def test_dense_crf_returns_marginals():
    image, fg = _scene()
    probs = np.concatenate([np.full((1, H, W), 0.2, np.float32), fg])
    q = dense_crf(image, probs, load_preset("seam"))
    assert q.shape == probs.shape and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)


def test_scale_factor_divides_kernel_widths():
    image, fg = _scene()
    probs = np.concatenate([np.full((1, H, W), 0.2, np.float32), fg])
    scaled = CRFPreset.from_config({"name": "s", "enabled": True, "scale_factor": 2})
    halved = CRFPreset.from_config({"name": "h", "enabled": True, "gaussian": {"sxy": 1.5, "compat": 3},
                                    "bilateral": {"sxy": 40, "srgb": 13, "compat": 10}})
    np.testing.assert_array_equal(dense_crf(image, probs, scaled), dense_crf(image, probs, halved))


def test_read_only_image_is_accepted():
    image, fg = _scene()
    frozen = image.copy()
    frozen.setflags(write=False)  # what np.asarray(PIL.Image) gives
    np.testing.assert_array_equal(refine(frozen, fg, KEYS, load_preset("seam")),
                                  refine(image, fg, KEYS, load_preset("seam")))


def test_no_foreground_class_gives_background():
    image, _ = _scene()
    out = refine(image, np.zeros((0, H, W), np.float32), [], load_preset("seam"))
    assert (out == 0).all()


def test_refine_many_pool_matches_in_process():
    jobs = []
    for seed in range(3):
        image, fg = _scene(seed)
        jobs.append((image, fg, KEYS))
    preset = load_preset("recurseed")
    serial = list(refine_many(jobs, preset, num_classes=21, workers=0))
    pooled = list(refine_many(jobs, preset, num_classes=21, workers=2))
    assert len(pooled) == 3
    for a, b in zip(serial, pooled):
        np.testing.assert_array_equal(a, b)


def test_bad_inputs_raise_clear_errors():
    image, fg = _scene()
    seam = load_preset("seam")
    with pytest.raises(ValueError, match="image is"):
        refine(image[:-1], fg, KEYS, seam)
    with pytest.raises(ValueError, match="uint8"):
        refine(image.astype(np.float32), fg, KEYS, seam)
    with pytest.raises(ValueError, match="len\\(fg_ids\\)"):
        refine(image, fg, [1], seam)
    with pytest.raises(ValueError, match="num_classes"):
        refine(image, fg, KEYS, load_preset("rtc"))
    with pytest.raises(ValueError, match="unknown keys"):
        CRFPreset.from_config({"name": "x", "sigma": 3})
    with pytest.raises(ValueError, match="learned"):
        Background("learned")
    with pytest.raises(FileNotFoundError, match="known presets"):
        load_preset("nope")
