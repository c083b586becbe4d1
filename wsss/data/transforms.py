"""Albumentations pipelines built from config lists.

Each entry is ``{name: <albumentations class>, **kwargs}``; every transform is built
with ``strict=True`` because albumentations 2.x otherwise ignores misspelt kwargs.
Label maps (GT, weak labels, segments, saliency) follow the image with nearest
interpolation; padding fills them with 255 (= ignore/unlabelled).
"""
from __future__ import annotations

import os
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
    from .wsss_transforms import CUSTOM

    if name in CUSTOM:
        return CUSTOM[name](**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}, strict=True)
    if name is None or not hasattr(A, name):
        raise ValueError(f"unknown albumentations transform {name!r} in config entry {spec}")
    fill_key = _LABEL_FILL_ARGS.get(name)
    if fill_key and fill_key not in spec:
        spec[fill_key] = LABEL_FILL
    for key, value in list(spec.items()):
        if isinstance(value, list):
            spec[key] = tuple(value)
    return getattr(A, name)(**spec, strict=True)


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

    def __call__(self, *args, **data):
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        key = (os.getpid(), None if info is None else info.id)
        if self._seeded_for != key:
            self.set_random_seed(_process_seed())
            self._seeded_for = key
        return super().__call__(*args, **data)


def build_pipeline(specs: Iterable[Mapping] | None, label_keys: Sequence[str] = ()) -> A.Compose:
    """Compose the configured transforms; ``label_keys`` become extra nearest-neighbour masks."""
    transforms = [build_transform(s) for s in (specs or [])]
    extra = {k: "mask" for k in label_keys if k != "mask"}
    return SeededCompose(transforms, additional_targets=extra, strict=True)


def normalize_image(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xHxW, ImageNet-normalised (what every seed repo uses)."""
    img = image.astype(np.float32) / 255.0
    img = (img - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(img.transpose(2, 0, 1))
