"""One split of any :class:`~wsss.data.layout.Layout` as a Dataset, and the collate function for its batches.

Why one class: reading, checking, augmenting and batching a sample do not depend on the data set; only the
layout (where the files are) and the supervision loader (which weak targets it adds) do.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .checks import scan_label_maps
from .formats import IGNORE_INDEX, DataFormatError, read_image, read_label_png
from .layout import Layout
from .targets import VALID, TargetSpec, label_map
from .transforms import IMAGENET_MEAN, IMAGENET_STD, build_pipeline, normalize_image


class SegmentationDataset(Dataset):
    """One split of ``layout``; yields dicts following the batch contract (image, name, cls, size, targets).

    ``load_mask``: add the GT (or, with ``mask_dir``, another folder of label PNGs such as pseudo labels),
    every file checked when the dataset is made. ``supervision`` (optional callable
    ``(layout, image_id, sample)``) adds weak targets and declares them in ``targets``. ``valid_mask``
    adds ``valid`` (1 on image pixels). ``flip_prob``: mirror before the pipeline, remapping class-id
    targets through ``layout.mirror_classes`` (data sets with left/right classes; their pipeline must not flip).
    """

    def __init__(self, layout: Layout, split: str, num_classes: int, load_mask: bool = True,
                 mask_dir: str | None = None, transforms: Sequence[Mapping] | None = None,
                 supervision: Optional[Callable] = None, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, valid_mask: bool = False, flip_prob: float = 0.0,
                 seed: int = 0):
        self.layout = layout
        self.split = split
        self.num_classes = num_classes
        self.load_mask = load_mask
        self.mask_override = mask_dir
        self.supervision = supervision
        self.mean, self.std = tuple(mean), tuple(std)
        self.valid_mask = valid_mask
        self.flip_prob = flip_prob
        self.rng = np.random.default_rng(seed)
        self.ids = layout.split_ids(split)
        specs = ([label_map("mask")] if load_mask else []) + list(getattr(supervision, "targets", ()))
        self.targets: Dict[str, TargetSpec] = {t.name: t for t in specs + ([VALID] if valid_mask else [])}
        self.pipeline = build_pipeline(transforms, list(self.targets.values()))
        self._check_files()
        self.cls_labels = layout.image_labels(self.ids, split, num_classes, self._present)

    def _check_files(self) -> None:
        """Every image exists; every mask this split reads is a usable label map (all at once, cached)."""
        missing = [i for i in self.ids if not self.layout.image_path(i).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} images named in split '{self.split}' are missing, e.g. "
                f"{self.layout.image_path(missing[0])}; fix the split list or dataset.root")
        self._present = None
        check = getattr(self.supervision, "check_files", None)  # a loader's own files (e.g. saliency maps)
        if check is not None:
            check(self.layout, self.ids)
        if self.load_mask:
            what = (f"pseudo labels in {self.layout.mask_dir(self.split, self.mask_override)}"
                    if self.mask_override else f"GT masks of split '{self.split}'")
            pairs = [(i, self.layout.image_path(i), self.layout.mask_path(i, self.split, self.mask_override))
                     for i in self.ids]
            present = scan_label_maps(pairs, self.num_classes, what)
            if not self.mask_override:
                self._present = present

    def __len__(self) -> int:
        return len(self.ids)

    def _read(self, image_id: str) -> dict:
        image = read_image(self.layout.image_path(image_id))
        sample = {"image": image}
        if self.load_mask:
            mpath = self.layout.mask_path(image_id, self.split, self.mask_override)
            mask = read_label_png(mpath, self.num_classes)
            if mask.shape != image.shape[:2]:
                raise DataFormatError(
                    f"{mpath}: mask is {mask.shape[0]}x{mask.shape[1]} but image "
                    f"{self.layout.image_path(image_id)} is {image.shape[0]}x{image.shape[1]}")
            sample["mask"] = mask
        if self.supervision is not None:
            self.supervision(self.layout, image_id, sample)
        if self.valid_mask:  # 1 on image pixels; crops pad it with 255 like every label map (see is_valid_pixel)
            sample["valid"] = np.ones(image.shape[:2], dtype=np.uint8)
        return sample

    def _mirror(self, sample: dict, cls: np.ndarray):
        """Mirror every map; with ``layout.mirror_classes`` class ids (and the image labels) swap too."""
        lut = getattr(self.layout, "mirror_classes", None)
        out = {}
        for key, value in sample.items():
            value = np.ascontiguousarray(value[:, ::-1])
            spec = self.targets.get(key)
            out[key] = lut[value] if lut is not None and spec is not None and spec.class_ids else value
        if lut is not None:
            fg = np.flatnonzero(cls) + 1
            cls = np.zeros_like(cls)
            cls[lut[fg].astype(np.int64) - 1] = 1.0
        return out, cls

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        sample = self._read(image_id)
        cls = self.cls_labels[image_id].astype(np.float32)
        if self.flip_prob and self.rng.random() < self.flip_prob:
            sample, cls = self._mirror(sample, cls)
        out = self.pipeline(**sample)
        result = {"name": image_id, "cls": torch.from_numpy(cls),
                  "image": torch.from_numpy(normalize_image(out["image"], self.mean, self.std)),
                  "size": torch.tensor(sample["image"].shape[:2])}
        for key, value in out.items():
            if key == "image":
                continue
            spec = self.targets.get(key)
            if spec is not None:
                value = np.ascontiguousarray(value).astype(spec.dtype)
                if spec.value_range is not None:
                    value = np.clip(value, *spec.value_range)
                value = torch.from_numpy(value)
            result[key] = value
        return result

    def pad_values(self) -> Dict[str, float]:
        """What the collate function pads each target with."""
        return {name: spec.pad_value for name, spec in self.targets.items()}


def is_valid_pixel(valid: torch.Tensor) -> torch.Tensor:
    """The batch's ``valid`` map (``dataset.valid_mask=true``) as booleans: True on real image pixels."""
    return valid == 1


def pad_collate(samples: List[dict], pad_values: Mapping[str, float] | None = None) -> dict:
    """Batch samples of different sizes (bottom/right padding): images with 0, each HxW target with its
    ``pad_values`` entry (the targets' :class:`~wsss.data.targets.TargetSpec`), 255 when not given."""
    pad_values = pad_values or {}
    batch: dict = {}
    h = max(s["image"].shape[-2] for s in samples)
    w = max(s["image"].shape[-1] for s in samples)
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key == "image":
            out = torch.zeros(len(values), values[0].shape[0], h, w, dtype=values[0].dtype)
            for i, v in enumerate(values):
                out[i, :, : v.shape[-2], : v.shape[-1]] = v
            batch[key] = out
        elif isinstance(values[0], torch.Tensor) and values[0].dim() == 2:
            out = torch.full((len(values), h, w), pad_values.get(key, IGNORE_INDEX), dtype=values[0].dtype)
            for i, v in enumerate(values):
                out[i, : v.shape[-2], : v.shape[-1]] = v
            batch[key] = out
        elif isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch
