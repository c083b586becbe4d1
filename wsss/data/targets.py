"""What each per-pixel target of a sample is, so augmentation, batching and dtype follow the target.

Why: label maps, over-segmentations and soft maps (saliency) need different treatment. Resizing a label map
bilinearly invents classes, and resizing a saliency map with nearest neighbour makes it blocky. Padding a
saliency map with 255 marks the padding as fully salient. A :class:`TargetSpec` says what a target needs.
The dataset declares ``mask``. Supervision loaders declare what they add (``weak``, ``segments``), and the
pipeline (:mod:`wsss.data.transforms`), the collate function and the final dtype cast all read the spec.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from .formats import IGNORE_INDEX

NEAREST, BILINEAR, BICUBIC = "nearest", "bilinear", "bicubic"


@dataclass(frozen=True)
class TargetSpec:
    """One HxW target: its batch dtype, how resizes interpolate it and what padding fills it with.

    ``class_ids``: its values are class ids, so a layout whose mirror swaps classes (DensePose's left and
    right parts) remaps them when it flips a sample. ``value_range``: a float map's values are clipped to it
    after augmentation (bicubic resizing overshoots, where the seed repos' PIL resize of a uint8 map clips).
    """

    name: str
    dtype: str = "int64"
    interpolation: str = NEAREST
    pad_value: float = IGNORE_INDEX
    class_ids: bool = False
    value_range: Optional[Tuple[float, float]] = None

    def __post_init__(self):
        if self.interpolation not in (NEAREST, BILINEAR, BICUBIC):
            raise ValueError(f"target '{self.name}': interpolation {self.interpolation!r} is not "
                             f"'{NEAREST}', '{BILINEAR}' or '{BICUBIC}'")


def label_map(name: str) -> TargetSpec:
    """Class ids with 255 = unlabelled: GT masks, pseudo labels, scribbles, points, CAM-derived labels."""
    return TargetSpec(name, "int64", NEAREST, IGNORE_INDEX, class_ids=True)


def soft_map(name: str, interpolation: str = BILINEAR) -> TargetSpec:
    """A float map in 0..1 (e.g. saliency): bilinear (or bicubic, clipped to 0..1), padded with 0 (= not salient)."""
    return TargetSpec(name, "float32", interpolation, 0.0, value_range=(0.0, 1.0))


#: 1 on image pixels, 255 where a crop or the collate function padded (``dataset.valid_mask``)
VALID = TargetSpec("valid", "int64", NEAREST, IGNORE_INDEX)
