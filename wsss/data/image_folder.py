"""A plain folder of images (optionally with label PNGs and split lists) as a layout: one's own data without
converting it to VOC's folder names.

Layout under ``root`` (folder names are options)::

    images/ID.jpg|.jpeg|.png    the images
    masks/ID.png                optional: class-id label PNGs (255 = ignore), needed for validation
    lists/SPLIT.txt             optional: one id a line; without it a split is every image in images/
    cls_labels.npy | .txt       optional: image-level labels; without it they come from the masks
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from .datamodule import SegmentationDataModule
from .formats import load_cls_labels, read_split_list
from .layout import labels_from_masks, require_labels

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class ImageFolderLayout:
    """Images in ``images``, label PNGs in ``masks``, split lists in ``lists`` (all relative to ``root``)."""

    mirror_classes = None

    def __init__(self, root: str | Path, images: str = "images", masks: str = "masks", lists: str = "lists"):
        self.root = Path(root).expanduser()
        self.images, self.masks, self.lists = self.root / images, self.root / masks, self.root / lists
        if not self.images.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.images}; pass dataset.root=/path/holding "
                                    f"{images}/ (or dataset.images=<its folder name>)")
        self._paths = {p.stem: p for p in sorted(self.images.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}

    def split_ids(self, split: str) -> List[str]:
        """The ids in ``lists/SPLIT.txt``; without that file every image of the folder."""
        listed = self.lists / f"{split}.txt"
        if listed.is_file():
            return read_split_list(listed)
        if not self._paths:
            raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {self.images} and no split list "
                                    f"{listed}")
        return list(self._paths)

    def image_path(self, image_id: str) -> Path:
        return self._paths.get(image_id, self.images / f"{image_id}.jpg")

    def mask_dir(self, split: str, override: str | None = None) -> Path:
        return Path(override).expanduser().absolute() if override else self.masks

    def mask_path(self, image_id: str, split: str, override: str | None = None) -> Path:
        return self.mask_dir(split, override) / f"{image_id}.png"

    def image_labels(self, ids: Sequence[str], split: str, num_classes: int, present=None,
                     strict: bool = True) -> Dict[str, np.ndarray]:
        """The root's ``cls_labels.npy`` / ``.txt``, else the classes in each image's mask."""
        from .checks import labels_from_present

        own = next((self.root / n for n in ("cls_labels.npy", "cls_labels.txt") if (self.root / n).is_file()), None)
        if own is not None:
            labels = load_cls_labels(own, num_classes - 1)
        elif present is not None:
            labels = labels_from_present(present, num_classes)
        else:
            labels = labels_from_masks(ids, self.image_path, lambda i: self.mask_path(i, split), num_classes,
                                       f"masks of split '{split}' (image labels)")
        if strict:
            require_labels(labels, ids, split, f"{own or self.root / 'cls_labels.npy'} and {self.masks}/ID.png")
        return labels


class ImageFolderDataModule(SegmentationDataModule):
    """Train/val loaders over an :class:`ImageFolderLayout` (``images`` / ``masks`` / ``lists``: folder names)."""

    def __init__(self, root: str, num_classes: int, class_names: Sequence[str], train_split: str = "train",
                 val_split: str = "val", images: str = "images", masks: str = "masks", lists: str = "lists",
                 **kwargs):
        super().__init__(root, num_classes, class_names, train_split, val_split, **kwargs)
        self.folders = {"images": images, "masks": masks, "lists": lists}

    def build_layout(self) -> ImageFolderLayout:
        return ImageFolderLayout(self.root, **self.folders)
