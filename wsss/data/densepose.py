"""DensePose body parts on COCO 2014 in the layout of SPML's README: its :class:`~wsss.data.layout.Layout`,
training targets, Dataset and LightningDataModule.

Layout under ``root`` (twke18/SPML README "DensePose"):

- ``images/{train2014,val2014}/ID.jpg``       COCO 2014 images (ID = ``COCO_train2014_000000085179``)
- ``segcls/densepose/gray/ID.png``            processed part labels, 'L', 0 background, 1..14 parts
- ``segcls/densepose_points/gray/ID.png``     point annotations, 255 unlabelled
- ``seginst/pmi_0.1_256/ID.png``              PMI-owt-ucm over-segmentation ids
- ``lists/SPLIT.txt``                         one ID a line, or the reference's lists
                                              (``images/... segcls/... seginst/...`` a line)

Horizontal flips swap left and right parts (``PART_FLIP``, from ``spml/data/datasets/densepose_dataset.py``),
so the flip is done by the dataset before the configured albumentations pipeline (which must not flip
again), through ``DensePoseLayout.mirror_classes``.
:func:`write_synthetic_densepose` writes a small set in this layout for tests and CPU runs.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from PIL import Image

from .datamodule import SegmentationDataModule
from .formats import read_label_png, write_split_list
from .layout import labels_from_masks, require_labels
from .segmentation import SegmentationDataset
from .supervision import (SEGMENT_PAD, SEGMENTS, SupervisionLoader, dilate_labels, missing_segments_message,
                          read_segments)
from .targets import label_map
from .transforms import IMAGENET_MEAN, IMAGENET_STD

PART_NAMES = ("background", "torso", "right hand", "left hand", "left foot", "right foot", "right thigh",
              "left thigh", "right leg", "left leg", "left arm", "right arm", "left forearm", "right forearm",
              "head")
#: label after a horizontal flip (SPML densepose_dataset.py: part_label_remap)
PART_FLIP = np.arange(256, dtype=np.uint8)
PART_FLIP[:15] = [0, 1, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 14]


class DensePoseLayout:
    """Where things live; ``gt_dir`` / ``points_dir`` / ``segments_dir`` are relative to ``root``."""

    mirror_classes = PART_FLIP

    def __init__(self, root: str | Path, gt_dir: str = "segcls/densepose/gray",
                 points_dir: str = "segcls/densepose_points/gray", segments_dir: str = "seginst/pmi_0.1_256"):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"DensePose root not found: {self.root}; pass dataset.root=/path/holding images/ segcls/ seginst/")
        self.gt_dir, self.points_dir, self.segments_dir = gt_dir, points_dir, segments_dir

    def image_path(self, image_id: str) -> Path:
        sub = "val2014" if "_val2014_" in image_id else "train2014"
        return self.root / "images" / sub / f"{image_id}.jpg"

    def gt_path(self, image_id: str) -> Path:
        return self.root / self.gt_dir / f"{image_id}.png"

    def points_path(self, image_id: str) -> Path:
        return self.root / self.points_dir / f"{image_id}.png"

    def segments_path(self, image_id: str) -> Path:
        return self.root / self.segments_dir / f"{image_id}.png"

    def mask_dir(self, split: str, override: str | None = None) -> Path:
        """GT part labels (the same folder for every split); ``override`` as :meth:`VOCLayout.mask_dir`."""
        return Path(override).expanduser().absolute() if override else self.root / self.gt_dir

    def mask_path(self, image_id: str, split: str, override: str | None = None) -> Path:
        return self.mask_dir(split, override) / f"{image_id}.png"

    def image_labels(self, ids: Sequence[str], split: str, num_classes: int, present=None,
                     strict: bool = True) -> Dict[str, np.ndarray]:
        """The parts in the GT when the split's GT was read (``present``: validation), else in the point
        annotations (what training sees), else in the GT masks that exist."""
        from .checks import labels_from_present

        if present is not None:
            labels = labels_from_present(present, num_classes)
        elif all(self.points_path(i).is_file() for i in ids):
            labels = labels_from_masks(ids, self.image_path, self.points_path, num_classes,
                                       f"point annotations of split '{split}'")
        else:
            labels = labels_from_masks(ids, self.image_path, self.gt_path, num_classes,
                                       f"part labels of split '{split}'")
        if strict:
            require_labels(labels, ids, split, f"{self.root / self.points_dir}/ID.png and "
                                               f"{self.root / self.gt_dir}/ID.png")
        return labels

    def split_ids(self, split: str) -> List[str]:
        path = Path(split) if split.endswith(".txt") else self.root / "lists" / f"{split}.txt"
        if not path.is_absolute() and not path.is_file():
            path = self.root / path
        if not path.is_file():
            raise FileNotFoundError(
                f"DensePose split list not found: {path}; write one image id (or the reference's "
                "'images/... segcls/... seginst/...' line) per line, e.g. SPML's datasets/densepose/*.txt")
        ids = []
        for line in path.read_text().splitlines():
            if line.strip():
                ids.append(Path(line.split()[0]).stem)
        return ids


class DensePosePoints(SupervisionLoader):
    """DensePose's training targets: the point annotations (``weak``, dilated) and the PMI over-segmentation
    (``segments``, required), both at the layout's folders."""

    def __init__(self, num_classes: int = 15, dilation: int = 1, points: bool = True, segments: bool = True):
        super().__init__(segments_dir=None, require_segments=True, num_classes=num_classes)
        self.dilation, self.load_points, self.load_segments = dilation, points, segments
        self.targets = tuple(t for t, on in ((label_map("weak"), points), (SEGMENTS, segments)) if on)

    def weak_labels(self, layout, image_id: str, sample: dict) -> Optional[np.ndarray]:
        if not self.load_points:
            return None
        return dilate_labels(read_label_png(layout.points_path(image_id), self.num_classes), self.dilation)

    def segments(self, layout, image_id: str) -> Optional[np.ndarray]:
        if not self.load_segments:
            return None
        path = layout.segments_path(image_id)
        if not path.is_file():
            raise FileNotFoundError(missing_segments_message(path))
        return read_segments(path)


class DensePoseParts(SegmentationDataset):
    """One split; yields the batch contract: image, name, cls (14 parts), mask (GT), weak (points), segments."""

    def __init__(self, root: str | Path, split: str, num_classes: int = 15, load_mask: bool = True,
                 load_points: bool = True, load_segments: bool = True, point_dilation: int = 1,
                 flip_prob: float = 0.0, transforms: Sequence[Mapping] | None = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, seed: int = 0,
                 **layout_kwargs):
        points = DensePosePoints(num_classes, point_dilation, load_points, load_segments)
        super().__init__(DensePoseLayout(root, **layout_kwargs), split, num_classes, load_mask=load_mask,
                         transforms=transforms, supervision=points if points.targets else None, mean=mean,
                         std=std, flip_prob=flip_prob, seed=seed)


class DensePoseDataModule(SegmentationDataModule):
    """Train on points (+ over-segmentations), validate on the processed DensePose part labels.

    ``layout``: folder names for :class:`DensePoseLayout` (``gt_dir``, ``points_dir``, ``segments_dir``).
    ``supervision`` (from conf/supervision) is not used: DensePose is trained on its points.
    """

    def __init__(self, root: str, num_classes: int = 15, class_names: Sequence[str] = PART_NAMES,
                 train_split: str = "train2014", val_split: str = "minival2014", batch_size: int = 4,
                 num_workers: int = 4, point_dilation: int = 1, flip_prob: float = 0.5,
                 synthetic: Mapping | None = None, layout: Mapping | None = None, **kwargs):
        super().__init__(root, num_classes, class_names, train_split, val_split, batch_size=batch_size,
                         num_workers=num_workers, flip_prob=flip_prob, **kwargs)
        self.point_dilation = point_dilation
        self.synthetic = dict(synthetic) if synthetic else None
        self.layout_options = dict(layout or {})

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            write_synthetic_densepose(self.root, **self.synthetic)

    def build_layout(self) -> DensePoseLayout:
        return DensePoseLayout(self.root, **self.layout_options)

    def train_supervision(self) -> DensePosePoints:
        return DensePosePoints(self.num_classes, self.point_dilation)


# ----- synthetic set -----------------------------------------------------------------------------
_PART_BOXES = {  # (part, y0, y1, x0, x1) in a 1x1 person box facing the camera: its right is image-left
    14: (0.00, 0.18, 0.38, 0.62), 1: (0.18, 0.52, 0.30, 0.70),
    11: (0.18, 0.34, 0.16, 0.30), 10: (0.18, 0.34, 0.70, 0.84),
    13: (0.34, 0.48, 0.16, 0.30), 12: (0.34, 0.48, 0.70, 0.84),
    2: (0.48, 0.56, 0.16, 0.30), 3: (0.48, 0.56, 0.70, 0.84),
    6: (0.52, 0.72, 0.32, 0.49), 7: (0.52, 0.72, 0.51, 0.68),
    8: (0.72, 0.92, 0.32, 0.49), 9: (0.72, 0.92, 0.51, 0.68),
    5: (0.92, 1.00, 0.28, 0.49), 4: (0.92, 1.00, 0.51, 0.72),
}


def _part_colour(part: int) -> np.ndarray:
    """Left and right parts look alike (as on people); part types differ."""
    kind = {2: 3, 4: 5, 6: 7, 8: 9, 10: 11, 12: 13}.get(part, part)
    rng = np.random.default_rng(kind * 7919)
    return rng.uniform(40, 230, size=3)


def write_synthetic_densepose(root: str | Path, num_train: int = 16, num_val: int = 4,
                              image_size: Sequence[int] = (64, 64), seed: int = 0, force: bool = False) -> Path:
    """A few people made of the 14 parts on noisy backgrounds, in the SPML DensePose layout (idempotent)."""
    root = Path(root)
    done = root / "synthetic_densepose.txt"
    stamp = f"{num_train} {num_val} {tuple(image_size)} {seed}"
    if done.is_file() and done.read_text() == stamp and not force:
        return root
    h, w = image_size
    layout = DensePoseLayout.__new__(DensePoseLayout)
    layout.root, layout.gt_dir = root, "segcls/densepose/gray"
    layout.points_dir, layout.segments_dir = "segcls/densepose_points/gray", "seginst/pmi_0.1_256"
    ids = {"train2014": [f"COCO_train2014_{i:012d}" for i in range(num_train)],
           "minival2014": [f"COCO_val2014_{i:012d}" for i in range(num_val)]}
    for folder in ("images/train2014", "images/val2014", layout.gt_dir, layout.points_dir, layout.segments_dir,
                   "lists"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for split, names in ids.items():
        for image_id in names:
            rng = np.random.default_rng(zlib.crc32(f"{seed}/{image_id}".encode()))
            img = rng.normal(120, 25, size=(h, w, 3))
            label = np.zeros((h, w), np.uint8)
            ph = int(rng.uniform(0.7, 0.95) * h)
            pw = int(ph * rng.uniform(0.45, 0.6))
            y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, max(1, w - pw + 1)))
            for part, (a, b, c, d) in _PART_BOXES.items():
                ys = slice(y0 + int(a * ph), y0 + max(int(b * ph), int(a * ph) + 1))
                xs = slice(x0 + int(c * pw), x0 + max(int(d * pw), int(c * pw) + 1))
                label[ys, xs] = part
                img[ys, xs] = _part_colour(part) + rng.normal(0, 8, size=img[ys, xs].shape)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(layout.image_path(image_id), quality=95)
            Image.fromarray(label, mode="L").save(layout.gt_path(image_id))
            points = np.full((h, w), 255, np.uint8)
            for part in np.unique(label):
                ys, xs = np.nonzero(label == part)
                k = 1 if part else 4
                for j in rng.choice(len(ys), size=min(k, len(ys)), replace=False):
                    points[ys[j], xs[j]] = part
            Image.fromarray(points, mode="L").save(layout.points_path(image_id))
            cells = (np.arange(h)[:, None] // 8) * ((w + 7) // 8) + np.arange(w)[None, :] // 8
            _, seg = np.unique(cells * 16 + label, return_inverse=True)
            seg = seg.reshape(h, w)
            seg = np.where(seg >= SEGMENT_PAD, seg + 1, seg).astype(np.uint16)
            Image.fromarray(seg.astype(np.int32)).convert("I;16").save(layout.segments_path(image_id))
        write_split_list(root / "lists" / f"{split}.txt", names)
    done.write_text(stamp)
    return root
