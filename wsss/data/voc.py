"""PASCAL VOC 2012 (+ SBD ``train_aug``) in the devkit layout: its :class:`~wsss.data.layout.Layout`,
Dataset and LightningDataModule.

The same code reads the embedded synthetic set, which is written in this layout.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from .datamodule import SegmentationDataModule
from .formats import VOC_CLASSES, load_cls_labels, read_split_list
from .layout import labels_from_masks, require_labels
from .segmentation import SegmentationDataset, is_valid_pixel, pad_collate  # noqa: F401 (imported from here)

PACKAGED_VOC12 = "wsss.resources.voc12"
AUG_SPLITS = ("train_aug",)


def packaged_voc12_file(name: str) -> Path:
    """Path of a file shipped with wsss (real VOC12 split lists and image-level labels)."""
    return Path(str(resources.files(PACKAGED_VOC12).joinpath(name)))


class VOCLayout:
    """Where things live in a VOC-style root; the one place that knows the folder names."""

    mirror_classes = None

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

    def image_labels(self, ids: Sequence[str], split: str, num_classes: int, present=None,
                     strict: bool = True) -> Dict[str, np.ndarray]:
        """Image-level labels: the root's ``cls_labels`` file, else the classes in the split's GT masks, else
        (no mask either) the packaged VOC12 labels. Masks come before the packaged file because a VOC-layout
        set that is not VOC may reuse VOC's image ids. ``present`` (id -> ids) skips re-reading scanned masks."""
        from .checks import labels_from_present

        own = self.cls_labels_file(packaged=False)
        labels = load_cls_labels(own, num_classes - 1) if own is not None else {}
        missing = [i for i in ids if i not in labels]
        if missing and present is not None:
            labels.update(labels_from_present({i: present[i] for i in missing if i in present}, num_classes))
        elif missing:
            labels.update(labels_from_masks(missing, self.image_path, lambda i: self.mask_path(i, split),
                                            num_classes, f"GT masks of split '{split}' (image labels)"))
        missing = [i for i in ids if i not in labels]
        if missing and own is None and self.packaged_fallback:
            packaged = self.cls_labels_file(packaged=True)
            if packaged is not None:
                labels.update({k: v for k, v in load_cls_labels(packaged, num_classes - 1).items() if k in missing})
        if strict:
            require_labels(labels, ids, split, f"{own or self.root / 'cls_labels.npy'} and the GT masks "
                                               f"{self.mask_dir(split)}/ID.png")
        return labels


class VOCSegmentation(SegmentationDataset):
    """One split of a VOC-layout root (:class:`SegmentationDataset` over :class:`VOCLayout`).

    Image-level labels come from ``cls_labels.npy``/``.txt`` when present, otherwise from the masks.
    ``mask_dir`` points the masks elsewhere (e.g. pseudo labels).
    """

    def __init__(self, root: str | Path, split: str, num_classes: int = 21, packaged_fallback: bool = False,
                 **kwargs):
        super().__init__(VOCLayout(root, packaged_fallback), split, num_classes, **kwargs)


class VOCDataModule(SegmentationDataModule):
    """Train/val loaders over a VOC-layout root.

    ``synthetic`` (a dict of generator arguments) makes the module write the embedded synthetic set at
    ``root`` first (only at ``synthetic_home`` when that is set); ``packaged_lists``: split lists and
    image labels fall back to the VOC12 copies shipped with wsss.
    """

    def __init__(self, root: str, num_classes: int = 21, class_names: Sequence[str] = VOC_CLASSES,
                 train_split: str = "train_aug", val_split: str = "val", synthetic: Mapping | None = None,
                 packaged_lists: bool = True, synthetic_home: str | None = None, **kwargs):
        super().__init__(root, num_classes, class_names, train_split, val_split, **kwargs)
        self.synthetic = dict(synthetic) if synthetic else None
        self.synthetic_home = synthetic_home
        self.packaged_lists = packaged_lists

    def prepare_data(self) -> None:
        from .synthetic import prepare_synthetic

        prepare_synthetic(self.root, self.synthetic, self.synthetic_home)

    def build_layout(self) -> VOCLayout:
        return VOCLayout(self.root, self.packaged_lists)
