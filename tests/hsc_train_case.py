"""The seeded inputs of the HSC training-parity case (``tests/fixtures/hsc/train/``).

Generated from NumPy's PCG64 here and by the reference run outside the repo (it imports this file), so the fixture
stores only outputs; ``checksums`` of the inputs are stored beside them and a changed generator fails loudly.
Sizes: batch 2, view 1 = a 144 crop (CAM 18 x 18), view 2 = its 128 resize (CAM 16 x 16, fixed by the reference).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
LABELS = ((3, 14), (0, 7, 14))  # image 0: cat/person-like pair; image 1: three classes, 14 shared


def _blobs(rng, n, c, h, w, scale):
    """Smooth random maps (a few Gaussian bumps plus noise): CAMs and saliency with some structure."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = rng.standard_normal((n, c, h, w)).astype(np.float32) * 0.3 * scale
    for i in range(n):
        for j in range(c):
            for _ in range(2):
                cy, cx = rng.uniform(0, h), rng.uniform(0, w)
                s = rng.uniform(0.15, 0.35) * h
                out[i, j] += scale * rng.uniform(0.5, 1.5) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return out


def make_case(seed: int = 14) -> dict:
    """Both views' CAMs, PCM CAMs, projector features, normalised images, saliency, labels, memory banks."""
    rng = np.random.default_rng(seed)
    b, h1, h2 = 2, 18, 16
    labels = np.zeros((b, 20), np.float32)
    for i, cls in enumerate(LABELS):
        labels[i, list(cls)] = 1
    image01 = np.clip(_blobs(rng, b, 3, 144, 144, 0.6) + 0.4, 0, 1)
    image = (image01 - MEAN[None, :, None, None]) / STD[None, :, None, None]
    saliency = np.clip(_blobs(rng, b, 1, 144, 144, 0.9), 0, 1)
    case = {
        "labels": labels, "image": image.astype(np.float32), "saliency": saliency.astype(np.float32),
        "cam1": _blobs(rng, b, 21, h1, h1, 4.0) - 1.0, "cam_rv1": _blobs(rng, b, 21, h1, h1, 3.0) - 0.5,
        "cam2": _blobs(rng, b, 21, h2, h2, 4.0) - 1.0, "cam_rv2": _blobs(rng, b, 21, h2, h2, 3.0) - 0.5,
        "feat1_1": np.abs(rng.standard_normal((b, 128, h1, h1))).astype(np.float32),  # relu(proj_fc): >= 0
        "feat1_2": rng.standard_normal((b, 256, h1, h1)).astype(np.float32),
        "feat2_1": np.abs(rng.standard_normal((b, 128, h2, h2))).astype(np.float32),
        "feat2_2": rng.standard_normal((b, 256, h2, h2)).astype(np.float32),
        # module/train.py:402-411 draw these with torch.randn at import
        "memobank1": rng.standard_normal((21, 256)).astype(np.float32),
        "memobank_fb": rng.standard_normal((2, 256)).astype(np.float32),
        "memobank1_p": rng.standard_normal((21, 128)).astype(np.float32),
        "memobank2": rng.standard_normal((21, 256)).astype(np.float32),
        "memobank1_fb": rng.standard_normal((2, 256)).astype(np.float32),
        "memobank2_p": rng.standard_normal((21, 128)).astype(np.float32),
    }
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in case.items()}


def second_view_inputs(image: torch.Tensor, saliency: torch.Tensor, size: int = 128):
    """module/train.py:536-537: the 128 view of the image and of the saliency (bilinear, align_corners=True)."""
    return (F.interpolate(image, size=(size, size), mode="bilinear", align_corners=True),
            F.interpolate(saliency, size=(size, size), mode="bilinear", align_corners=True))


def make_pcm_case(seed: int = 15) -> dict:
    """Inputs of the PCM head: a raw CAM, conv4 / conv5 features, the image, and the three 1x1 weights."""
    rng = np.random.default_rng(seed)
    b, h = 2, 8
    case = {
        "cam": _blobs(rng, b, 21, h, h, 4.0) - 1.0,
        "image": rng.standard_normal((b, 3, 64, 64)).astype(np.float32),
        "conv4": np.abs(rng.standard_normal((b, 512, h, h))).astype(np.float32),
        "conv5": np.abs(rng.standard_normal((b, 1024, h, h))).astype(np.float32),
        "f8_3": (rng.standard_normal((64, 512, 1, 1)) * np.sqrt(2 / 512)).astype(np.float32),
        "f8_4": (rng.standard_normal((128, 1024, 1, 1)) * np.sqrt(2 / 1024)).astype(np.float32),
        "f9": (rng.uniform(-1, 1, (192, 195, 1, 1)) * 4 * np.sqrt(6 / (195 + 192))).astype(np.float32),
    }
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in case.items()}


def checksums(case: dict) -> dict:
    """Sum and sum of squares of every input (float64): the fixture's guard against a changed generator."""
    return {k: [float(v.double().sum()), float((v.double() ** 2).sum())] for k, v in case.items()}
