"""MS COCO 2014 (81 classes with background) as a :class:`~wsss.data.layout.Layout` and its datamodule.

Two layouts read the same way (folder names are options, ``conf/dataset/coco.yaml``):

- what ``scripts/prepare_coco.py`` writes: ``images/{train2014,val2014}/ID.jpg``,
  ``SegmentationClass/{train2014,val2014}/ID.png``, ``ImageSets/SPLIT.txt``, ``cls_labels.npy``;
- the AFA/ToCo family's released files as they are: images in ``train2014/`` / ``val2014/`` (``dataset.images=.``),
  their label PNGs in ``<masks>/{train2014,val2014}/`` (e.g. ``dataset.masks=coco_anno``), their lists and
  ``cls_labels_onehot.npy`` (80- or 81-wide, keyed by ID) in ``dataset.lists`` (e.g. their ``datasets/coco``).

IDs are image file stems (``COCO_val2014_000000000042``): the ``val2014``/``train2014`` in an ID says which image
folder holds it; a split whose name contains ``val`` reads its masks from the ``val2014`` mask folder, any other from
``train2014`` (a mask folder without those subfolders is used flat).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .datamodule import SegmentationDataModule
from .formats import DataFormatError, load_cls_labels, load_cls_labels_npy, read_split_list
from .layout import labels_from_masks, require_labels

LABEL_FILES = ("cls_labels.npy", "cls_labels_onehot.npy", "cls_labels.txt")
SUBSETS = ("train2014", "val2014")


def subset_of_split(split: str) -> str:
    """The image/mask subfolder of a split: ``val2014`` for val, val_all, val_part, ..., else ``train2014``."""
    return "val2014" if "val" in Path(split).stem else "train2014"


def subset_of_id(image_id: str) -> Optional[str]:
    return next((s for s in SUBSETS if f"_{s}_" in image_id), None)


class COCOLayout:
    """Where things live under ``root``; ``images`` / ``masks`` / ``lists`` are folder names (or absolute paths)."""

    mirror_classes = None

    def __init__(self, root: str | Path, images: str = "images", masks: str = "SegmentationClass",
                 lists: str = "ImageSets"):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"COCO root not found: {self.root}; pass dataset.root=/path/coco_wsss (written by "
                                    "scripts/prepare_coco.py --out)")
        self.images, self.masks, self.lists = (self.root / images).absolute(), self.root / masks, self.root / lists

    # ----- ids and images ---------------------------------------------------------------------
    def split_file(self, split: str) -> Path:
        candidates = [Path(split).expanduser()] if split.endswith(".txt") else []
        candidates += [self.lists / f"{split}.txt", self.root / f"{split}.txt"]
        for path in candidates:
            if path.is_file():
                return path
        raise FileNotFoundError(f"COCO split list '{split}' not found: looked for {self.lists / (split + '.txt')}; "
                                "scripts/prepare_coco.py writes train, val, train_all and val_all (or pass "
                                "dataset.lists=FOLDER holding SPLIT.txt)")

    def split_ids(self, split: str) -> List[str]:
        return read_split_list(self.split_file(split))

    def image_path(self, image_id: str) -> Path:
        subset = subset_of_id(image_id)
        folders = [self.images / subset] if subset else [self.images / s for s in SUBSETS]
        for folder in folders + [self.images]:
            if (folder / f"{image_id}.jpg").is_file():
                return folder / f"{image_id}.jpg"
        return folders[0] / f"{image_id}.jpg"

    # ----- masks ------------------------------------------------------------------------------
    def mask_dir(self, split: str, override: str | None = None) -> Path:
        """``masks/<train2014|val2014>`` (by the split's name), ``masks`` itself when it has no such subfolder;
        ``override`` (pseudo labels, another GT folder) is a folder of its own."""
        if override:
            return Path(override).expanduser().absolute()
        sub = self.masks / subset_of_split(split)
        return sub if sub.is_dir() or not self.masks.is_dir() or not any(self.masks.glob("*.png")) else self.masks

    def mask_path(self, image_id: str, split: str, override: str | None = None) -> Path:
        return self.mask_dir(split, override) / f"{image_id}.png"

    # ----- image-level labels -----------------------------------------------------------------
    def cls_labels_file(self) -> Optional[Path]:
        for folder in (self.root, self.lists):
            for name in LABEL_FILES:
                if (folder / name).is_file():
                    return folder / name
        return None

    def read_label_file(self, path: Path, num_classes: int) -> Dict[str, np.ndarray]:
        """``cls_labels.npy`` (foreground only) or AFA/ToCo's ``cls_labels_onehot.npy`` (with or without a
        background entry first)."""
        try:
            return load_cls_labels(path, num_classes - 1)
        except DataFormatError:
            if path.suffix != ".npy":
                raise
        try:
            with_bg = load_cls_labels_npy(path, num_classes)
        except DataFormatError as exc:
            raise DataFormatError(f"{path}: image labels must have {num_classes - 1} entries (foreground) or "
                                  f"{num_classes} (background first) for dataset.num_classes={num_classes}; "
                                  f"{exc}") from exc
        return {k: v[1:] for k, v in with_bg.items()}

    def image_labels(self, ids: Sequence[str], split: str, num_classes: int, present=None,
                     strict: bool = True) -> Dict[str, np.ndarray]:
        """The root's label file (see :data:`LABEL_FILES`), else the classes in each image's mask."""
        from .checks import labels_from_present

        own = self.cls_labels_file()
        labels = self.read_label_file(own, num_classes) if own is not None else {}
        missing = [i for i in ids if i not in labels]
        if missing and present is not None:
            labels.update(labels_from_present({i: present[i] for i in missing if i in present}, num_classes))
        elif missing:
            labels.update(labels_from_masks(missing, self.image_path, lambda i: self.mask_path(i, split),
                                            num_classes, f"COCO masks of split '{split}' (image labels)"))
        if strict:
            require_labels(labels, ids, split, f"{own or self.root / 'cls_labels.npy'} and the masks "
                                               f"{self.mask_dir(split)}/ID.png")
        return labels


class COCODataModule(SegmentationDataModule):
    """Train/val loaders over a :class:`COCOLayout` (``images`` / ``masks`` / ``lists``: folder names)."""

    def __init__(self, root: str, num_classes: int = 81, class_names: Sequence[str] = (), train_split: str = "train",
                 val_split: str = "val", images: str = "images", masks: str = "SegmentationClass",
                 lists: str = "ImageSets", **kwargs):
        super().__init__(root, num_classes, class_names, train_split, val_split, **kwargs)
        self.folders = {"images": images, "masks": masks, "lists": lists}

    def build_layout(self) -> COCOLayout:
        return COCOLayout(self.root, **self.folders)
