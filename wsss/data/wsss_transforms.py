"""Transforms albumentations lacks, named in config lists like its own (``{name: CropAtMost, ...}``).

Why: the seed repos' random long-side resize was written out as hundreds of literal sizes, and a fixed
crop padded most of a small image; these keep recipes short and data of any image size usable.
Randomness comes from albumentations' own seeded generator (``self.py_random``), so pipelines stay
reproducible.
"""
from __future__ import annotations

from typing import Any, Dict

import albumentations as A
from albumentations.augmentations.crops.transforms import BaseCrop


class CropAtMost(BaseCrop):
    """A random ``height x width`` crop, or the whole side where the image is smaller: never pads.

    Batches of differently sized crops are padded by the collate function (image 0 = the mean colour after
    normalisation, labels 255), so small images are not mostly padding the way a fixed crop makes them.
    """

    def __init__(self, height: int, width: int, p: float = 1.0, strict: bool = False):
        super().__init__(p=p)
        self.height, self.width = int(height), int(width)

    def get_params_dependent_on_data(self, params: Dict[str, Any], data: Dict[str, Any]) -> Dict[str, Any]:
        h, w = params["shape"][:2]
        ch, cw = min(self.height, h), min(self.width, w)
        y0 = self.py_random.randint(0, h - ch)
        x0 = self.py_random.randint(0, w - cw)
        return {"crop_coords": (x0, y0, x0 + cw, y0 + ch)}


def RandomResizeLong(min_size: int, max_size: int, interpolation: int = 1, p: float = 1.0,  # noqa: N802
                     strict: bool = True, mask_interpolation: int = 0) -> A.LongestMaxSize:
    """The longer side resized to a uniform integer in ``[min_size, max_size]`` (PSA/SEAM/RTC's
    ``RandomResizeLong``; ``interpolation=2`` is their PIL bicubic)."""
    if not 0 < int(min_size) <= int(max_size):
        raise ValueError(f"RandomResizeLong: need 0 < min_size <= max_size, got {min_size}, {max_size}")
    return A.LongestMaxSize(max_size=tuple(range(int(min_size), int(max_size) + 1)), interpolation=interpolation,
                            mask_interpolation=mask_interpolation, p=p, strict=strict)


CUSTOM = {"CropAtMost": CropAtMost, "RandomResizeLong": RandomResizeLong}
