"""PASCAL VOC 2012 (+ SBD ``train_aug``) in the devkit layout, as Dataset and LightningDataModule.

The same code reads the embedded synthetic set, which is written in this layout.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from .formats import (IGNORE_INDEX, VOC_CLASSES, DataFormatError, load_cls_labels, read_image,
                      read_label_png, read_split_list)
from .checks import scan_label_maps
from .samplers import UnpaddedDistributedSampler
from .transforms import IMAGENET_MEAN, IMAGENET_STD, build_pipeline, normalize_image

PACKAGED_VOC12 = "wsss.resources.voc12"
AUG_SPLITS = ("train_aug",)


def packaged_voc12_file(name: str) -> Path:
    """Path of a file shipped with wsss (real VOC12 split lists and image-level labels)."""
    return Path(str(resources.files(PACKAGED_VOC12).joinpath(name)))


class VOCLayout:
    """Where things live in a VOC-style root; the one place that knows the folder names."""

    def __init__(self, root: str | Path, packaged_fallback: bool = False):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"dataset root not found: {self.root}; pass dataset.root=/path/to/VOC2012 (the folder holding "
                "JPEGImages/ and SegmentationClass/)")
        self.packaged_fallback = packaged_fallback

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def split_file(self, split: str) -> Path:
        for candidate in (self.root / "ImageSets" / "Segmentation" / f"{split}.txt", self.root / f"{split}.txt"):
            if candidate.is_file():
                return candidate
        packaged = packaged_voc12_file(f"{split}.txt")
        if self.packaged_fallback and packaged.is_file():
            return packaged
        raise FileNotFoundError(
            f"split list '{split}' not found: looked for {self.root / 'ImageSets/Segmentation' / (split + '.txt')}; "
            "create it (one image id per line) or choose an existing split")

    def split_ids(self, split: str) -> List[str]:
        return read_split_list(self.split_file(split))

    def mask_dir(self, split: str, override: str | None = None) -> Path:
        """GT masks: ``SegmentationClassAug`` for train_aug, else ``SegmentationClass`` (Aug as fallback).

        ``override`` (e.g. ``dataset.pseudo_label_dir``) is a folder of its own: a relative path means the
        working directory, as every other path given on the command line.
        """
        if override:
            return Path(override).expanduser().absolute()
        plain, aug = self.root / "SegmentationClass", self.root / "SegmentationClassAug"
        if split in AUG_SPLITS:
            return aug
        return plain if plain.is_dir() or not aug.is_dir() else aug

    def mask_path(self, image_id: str, split: str, override: str | None = None) -> Path:
        return self.mask_dir(split, override) / f"{image_id}.png"

    def cls_labels_file(self, packaged: bool | None = None) -> Optional[Path]:
        """The root's ``cls_labels.npy``/``.txt``; the packaged VOC12 labels only when ``packaged`` (default:
        the layout's fallback setting) and the root has none."""
        for name in ("cls_labels.npy", "cls_labels.txt"):
            if (self.root / name).is_file():
                return self.root / name
        packaged = self.packaged_fallback if packaged is None else packaged
        path = packaged_voc12_file("cls_labels.txt")
        return path if packaged and path.is_file() else None

    def image_labels(self, ids: Sequence[str], split: str, num_classes: int, present=None) -> Dict[str, np.ndarray]:
        """Image-level labels: the root's ``cls_labels`` file, else the classes in the split's GT masks, else
        (no masks either) the packaged VOC12 labels. Masks come before the packaged file because a VOC-layout
        set that is not VOC may reuse VOC's image ids. ``present`` (id -> ids) skips re-reading scanned masks."""
        from .checks import labels_from_present, scan_label_maps

        own = self.cls_labels_file(packaged=False)
        labels = load_cls_labels(own, num_classes - 1) if own is not None else {}
        missing = [i for i in ids if i not in labels]
        if missing and present is None and all(self.mask_path(i, split).is_file() for i in missing):
            present = scan_label_maps([(i, self.image_path(i), self.mask_path(i, split)) for i in missing],
                                      num_classes, f"GT masks of split '{split}' (image labels)")
        if missing and present is not None:
            labels.update(labels_from_present({i: present[i] for i in missing if i in present}, num_classes))
            missing = [i for i in ids if i not in labels]
        if missing and own is None and self.packaged_fallback:
            packaged = self.cls_labels_file(packaged=True)
            if packaged is not None:
                labels.update({k: v for k, v in load_cls_labels(packaged, num_classes - 1).items() if k in missing})
                missing = [i for i in ids if i not in labels]
        if missing:
            raise DataFormatError(
                f"no image-level label for {len(missing)} images of split '{split}' (e.g. {missing[0]}): not in "
                f"{own or self.root / 'cls_labels.npy'}, and no GT mask {self.mask_path(missing[0], split)} to "
                "derive it from; add the masks or a cls_labels.npy (SEAM format) to the root")
        return labels


class VOCSegmentation(Dataset):
    """One split of a VOC-layout root; yields dicts following the batch contract.

    Image-level labels come from ``cls_labels.npy``/``.txt`` when present, otherwise
    from the masks. ``mask_dir`` points the masks elsewhere (e.g. pseudo labels).
    ``supervision`` (optional callable) adds weak targets per sample.
    """

    def __init__(self, root: str | Path, split: str, num_classes: int = 21, load_mask: bool = True,
                 mask_dir: str | None = None, transforms: Sequence[Mapping] | None = None,
                 supervision: Optional[Callable] = None, packaged_fallback: bool = False,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 label_keys: Sequence[str] = ("mask",), valid_mask: bool = False):
        self.layout = VOCLayout(root, packaged_fallback)
        self.split = split
        self.num_classes = num_classes
        self.load_mask = load_mask
        self.mask_override = mask_dir
        self.supervision = supervision
        self.mean, self.std = tuple(mean), tuple(std)
        self.ids = self.layout.split_ids(split)
        extra_keys = tuple(getattr(supervision, "label_keys", ())) if supervision is not None else ()
        self.valid_mask = valid_mask
        if valid_mask:
            extra_keys += ("valid",)
        self.pipeline = build_pipeline(transforms, tuple(label_keys) + extra_keys)
        self._check_files()
        self.cls_labels = self._load_cls_labels()

    def _check_files(self) -> None:
        """Every image exists; every mask this split reads is a usable label map (all at once, cached)."""
        missing = [i for i in self.ids if not self.layout.image_path(i).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} images named in split '{self.split}' ({self.layout.split_file(self.split)}) are "
                f"missing, e.g. {self.layout.image_path(missing[0])}; fix the list or dataset.root")
        self._present = None
        if self.load_mask:
            what = (f"pseudo labels in {self.layout.mask_dir(self.split, self.mask_override)}"
                    if self.mask_override else f"GT masks of split '{self.split}'")
            pairs = [(i, self.layout.image_path(i), self.layout.mask_path(i, self.split, self.mask_override))
                     for i in self.ids]
            present = scan_label_maps(pairs, self.num_classes, what)
            if not self.mask_override:
                self._present = present

    def _load_cls_labels(self) -> Dict[str, np.ndarray]:
        return self.layout.image_labels(self.ids, self.split, self.num_classes, self._present)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
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
        label = self.cls_labels[image_id]
        out = self.pipeline(**sample)
        result = {"name": image_id, "cls": torch.from_numpy(label.astype(np.float32)),
                  "image": torch.from_numpy(normalize_image(out["image"], self.mean, self.std)),
                  "size": torch.tensor(image.shape[:2])}
        for key, value in out.items():
            if key != "image" and isinstance(value, np.ndarray):
                result[key] = torch.from_numpy(np.ascontiguousarray(value).astype(np.int64))
            elif key != "image":
                result[key] = value
        return result


def is_valid_pixel(valid: torch.Tensor) -> torch.Tensor:
    """The batch's ``valid`` map (``dataset.valid_mask=true``) as booleans: True on real image pixels."""
    return valid == 1


def pad_collate(samples: List[dict]) -> dict:
    """Batch samples of different sizes: images padded with 0, label maps with 255 (bottom/right)."""
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
            out = torch.full((len(values), h, w), IGNORE_INDEX, dtype=values[0].dtype)
            for i, v in enumerate(values):
                out[i, : v.shape[-2], : v.shape[-1]] = v
            batch[key] = out
        elif isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch


class VOCDataModule(pl.LightningDataModule):
    """Train/val loaders over a VOC-layout root.

    ``synthetic`` (a dict of generator arguments) makes the module write the embedded
    synthetic set at ``root`` first; ``pseudo_label_dir`` trains on pseudo-label PNGs.
    """

    def __init__(self, root: str, num_classes: int = 21, class_names: Sequence[str] = VOC_CLASSES,
                 train_split: str = "train_aug", val_split: str = "val", batch_size: int = 8,
                 val_batch_size: int = 1, num_workers: int = 2, train_transforms: Sequence[Mapping] | None = None,
                 val_transforms: Sequence[Mapping] | None = None, train_masks: bool = False,
                 pseudo_label_dir: str | None = None, supervision: Optional[Callable] = None,
                 synthetic: Mapping | None = None, packaged_lists: bool = True,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 limit_val_samples: int | None = None, valid_mask: bool = False, crop_size: int | None = None,
                 synthetic_home: str | None = None):
        super().__init__()
        self.crop_size = crop_size  # the training crop; conf/dataset/*.yaml's transform lists interpolate it
        self.root = root
        self.num_classes = num_classes
        self.class_names = list(class_names)
        if len(self.class_names) != num_classes:
            raise ValueError(f"dataset.class_names has {len(self.class_names)} names but num_classes={num_classes}")
        self.train_split, self.val_split = train_split, val_split
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.num_workers = num_workers
        self.train_transforms, self.val_transforms = train_transforms, val_transforms
        self.train_masks = train_masks or pseudo_label_dir is not None
        self.pseudo_label_dir = pseudo_label_dir
        self.supervision = supervision
        self.synthetic = dict(synthetic) if synthetic else None
        self.synthetic_home = synthetic_home
        self.packaged_lists = packaged_lists
        self.mean, self.std = mean, std
        self.limit_val_samples = limit_val_samples
        self.valid_mask = valid_mask
        self.train_set: Optional[VOCSegmentation] = None
        self.val_set: Optional[VOCSegmentation] = None

    def prepare_data(self) -> None:
        from .synthetic import prepare_synthetic

        prepare_synthetic(self.root, self.synthetic, self.synthetic_home)

    def _dataset(self, split: str, train: bool) -> VOCSegmentation:
        return VOCSegmentation(
            self.root, split, self.num_classes, load_mask=(self.train_masks if train else True),
            mask_dir=self.pseudo_label_dir if train else None,
            transforms=self.train_transforms if train else self.val_transforms,
            supervision=self.supervision if train else None, packaged_fallback=self.packaged_lists,
            mean=self.mean, std=self.std, valid_mask=self.valid_mask and train)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # idempotent; covers ranks that skipped prepare_data
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._dataset(self.train_split, train=True)
            if len(self.train_set) < self.batch_size:  # drop_last would leave no batch: an untrained "result"
                raise ValueError(f"split '{self.train_split}' of {self.root} has {len(self.train_set)} images, fewer "
                                 f"than dataset.batch_size={self.batch_size}: no full training batch; lower "
                                 "dataset.batch_size")
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = self._dataset(self.val_split, train=False)
            if self.limit_val_samples:
                self.val_set.ids = self.val_set.ids[: self.limit_val_samples]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.num_workers, collate_fn=pad_collate,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())

    def val_dataloader(self) -> DataLoader:
        sampler = None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            sampler = UnpaddedDistributedSampler(self.val_set)
        return DataLoader(self.val_set, batch_size=self.val_batch_size, shuffle=False, sampler=sampler,
                          num_workers=self.num_workers, collate_fn=pad_collate,
                          persistent_workers=self.num_workers > 0)
