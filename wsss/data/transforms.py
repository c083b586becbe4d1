"""Albumentations pipelines built from config lists.

Each entry is ``{name: <albumentations class>, **kwargs}``; every transform is built
with ``strict=True`` because albumentations 2.x otherwise ignores misspelt kwargs.
Label maps (GT, weak labels, segments, saliency) follow the image with nearest
interpolation; padding fills them with 255 (= ignore/unlabelled).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import albumentations as A
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LABEL_FILL = 255
_LABEL_FILL_ARGS = {"PadIfNeeded": "fill_mask", "RandomCrop": "fill_mask", "CropNonEmptyMaskIfExists": None,
                    "RandomResizedCrop": None, "Affine": "fill_mask", "Rotate": "fill_mask",
                    "ShiftScaleRotate": "fill_mask"}


def build_transform(spec: Mapping) -> A.BasicTransform:
    spec = dict(spec)
    name = spec.pop("name", None)
    if name is None or not hasattr(A, name):
        raise ValueError(f"unknown albumentations transform {name!r} in config entry {spec}")
    fill_key = _LABEL_FILL_ARGS.get(name)
    if fill_key and fill_key not in spec:
        spec[fill_key] = LABEL_FILL
    for key, value in list(spec.items()):
        if isinstance(value, list):
            spec[key] = tuple(value)
    return getattr(A, name)(**spec, strict=True)


def build_pipeline(specs: Iterable[Mapping] | None, label_keys: Sequence[str] = ()) -> A.Compose:
    """Compose the configured transforms; ``label_keys`` become extra nearest-neighbour masks."""
    transforms = [build_transform(s) for s in (specs or [])]
    extra = {k: "mask" for k in label_keys if k != "mask"}
    return A.Compose(transforms, additional_targets=extra, strict=True)


def normalize_image(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xHxW, ImageNet-normalised (what every seed repo uses)."""
    img = image.astype(np.float32) / 255.0
    img = (img - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(img.transpose(2, 0, 1))
