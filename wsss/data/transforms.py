"""Albumentations pipelines built from config lists.

Each entry is ``{name: <albumentations class>, **kwargs}``; every transform is built
with ``strict=True`` because albumentations 2.x otherwise ignores misspelt kwargs.
Every other per-pixel target follows the image as its :class:`~wsss.data.targets.TargetSpec` says: label
maps with nearest interpolation and padded with 255 (= ignore/unlabelled), soft maps (saliency)
bilinear and padded with 0. An albumentations call has one mask interpolation and one mask fill, so
targets that differ there go through their own copy of the pipeline, replayed with the same random draws.
"""
from __future__ import annotations

import inspect
import os
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import albumentations as A
import cv2
import numpy as np

from .targets import BICUBIC, NEAREST, TargetSpec, label_map

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LABEL_FILL = 255
_LABEL_FILL_ARGS = {"PadIfNeeded": "fill_mask", "RandomCrop": "fill_mask", "CropNonEmptyMaskIfExists": None,
                    "RandomResizedCrop": None, "Affine": "fill_mask", "Rotate": "fill_mask",
                    "ShiftScaleRotate": "fill_mask"}
#: transforms whose random parameters depend on a mask: they cannot be replayed on other targets
_MASK_DEPENDENT = ("CropNonEmptyMaskIfExists", "MaskDropout")


def build_transform(spec: Mapping, fill: float = LABEL_FILL, interpolation: str = NEAREST) -> A.BasicTransform:
    """One configured transform; its masks are padded with ``fill`` and, unless ``interpolation`` is
    nearest, resized with it (a ``fill_mask`` given in the config is for label maps, fill 255)."""
    spec = dict(spec)
    name = spec.pop("name", None)
    from .wsss_transforms import CUSTOM

    if name not in CUSTOM and (name is None or not hasattr(A, name)):
        raise ValueError(f"unknown albumentations transform {name!r} in config entry {spec}")
    cls = CUSTOM[name] if name in CUSTOM else getattr(A, name)
    fill_key = _LABEL_FILL_ARGS.get(name)
    if fill_key and (fill_key not in spec or fill != LABEL_FILL):
        spec[fill_key] = fill
    if interpolation != NEAREST and "mask_interpolation" in inspect.signature(cls).parameters:
        spec["mask_interpolation"] = cv2.INTER_CUBIC if interpolation == BICUBIC else cv2.INTER_LINEAR
    for key, value in list(spec.items()):
        if isinstance(value, list):
            spec[key] = tuple(value)
    return cls(**spec, strict=True)


def _process_seed() -> int:
    """This process's augmentation seed, from torch's seed and the global rank.

    In the main process ``torch.initial_seed()`` is the run's ``seed`` (``pl.seed_everything``); in a
    DataLoader worker it is the per-worker seed torch drew from the main process's generator (then
    re-derived from base seed, worker id and rank by Lightning's ``worker_init_fn`` under
    ``seed_everything(workers=True)``). The rank is mixed in so DDP ranks without workers differ.
    """
    import torch
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    rank = int(getattr(rank_zero_only, "rank", 0) or 0)
    return int(np.random.SeedSequence([torch.initial_seed(), rank]).generate_state(1)[0])


class SeededCompose(A.Compose):
    """``A.Compose`` whose random state follows the run's seed.

    albumentations 2.x seeds ``Compose(seed=None)`` from OS entropy and ignores numpy / torch / ``random``
    seeds, so every run augmented differently whatever ``seed=`` said; and a forked DataLoader worker
    inherits an identical copy of the state. Before its first call in each process (main or worker) this
    re-seeds itself from :func:`_process_seed`, so a seed gives the same augmentations run after run and
    every worker its own stream.
    """

    _seeded_for = None

    def ensure_seeded(self) -> None:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        key = (os.getpid(), None if info is None else info.id)
        if self._seeded_for != key:
            self.set_random_seed(_process_seed())
            self._seeded_for = key

    def __call__(self, *args, **data):
        self.ensure_seeded()
        return super().__call__(*args, **data)


class GroupedPipeline:
    """The pipeline once per group of targets with the same interpolation and fill, on the same random draws.

    Each call seeds every copy from the first one's (per-process seeded) stream, and every copy sees the
    image, so crops, scales and flips coincide; only the first copy's image is kept.
    """

    def __init__(self, composes: List[A.Compose], groups: List[Tuple[str, ...]]):
        self.composes, self.groups = composes, groups

    def __call__(self, **sample) -> Dict[str, np.ndarray]:
        first = self.composes[0]
        first.ensure_seeded()
        seed = first.py_random.getrandbits(32)
        out = dict(sample)
        for index, (compose, names) in enumerate(zip(self.composes, self.groups)):
            compose.set_random_seed(seed)
            data = {"image": sample["image"], **{n: sample[n] for n in names if n in sample}}
            res = A.Compose.__call__(compose, **data)
            out.update({k: v for k, v in res.items() if k != "image" or index == 0})
        return out


def build_pipeline(specs: Iterable[Mapping] | None, targets: Sequence[TargetSpec | str] = ()):
    """Compose the configured transforms for the image and ``targets`` (a plain name is a label map).

    One albumentations pipeline when all targets share interpolation and fill (label maps, segments),
    else a :class:`GroupedPipeline`; both are called as ``pipeline(image=..., **targets)``.
    """
    specs = list(specs or [])
    groups: Dict[Tuple[str, float], List[str]] = {(NEAREST, LABEL_FILL): []}
    for t in targets:
        t = label_map(t) if isinstance(t, str) else t
        groups.setdefault((t.interpolation, t.pad_value), []).append(t.name)
    if not groups[(NEAREST, LABEL_FILL)] and len(groups) > 1:
        del groups[(NEAREST, LABEL_FILL)]
    composes = []
    for (interpolation, fill), names in groups.items():
        transforms = [build_transform(s, fill, interpolation) for s in specs]
        extra = {k: "mask" for k in names if k != "mask"}
        composes.append(SeededCompose(transforms, additional_targets=extra, strict=True))
    if len(composes) == 1:
        return composes[0]
    dependent = [s.get("name") for s in specs if s.get("name") in _MASK_DEPENDENT]
    if dependent:
        raise ValueError(f"transform {dependent[0]} draws its parameters from a mask and cannot be replayed on "
                         f"targets {[n for g in list(groups.values())[1:] for n in g]} (other interpolation or "
                         "padding); remove it from the transform list")
    return GroupedPipeline(composes, [tuple(g) for g in groups.values()])


def normalize_image(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xHxW, ImageNet-normalised (what every seed repo uses)."""
    img = image.astype(np.float32) / 255.0
    img = (img - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(img.transpose(2, 0, 1))
