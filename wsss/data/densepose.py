"""DensePose body parts on COCO 2014 in the layout of SPML's README, as Dataset and LightningDataModule.

Layout under ``root`` (twke18/SPML README "DensePose"):

- ``images/{train2014,val2014}/ID.jpg``       COCO 2014 images (ID = ``COCO_train2014_000000085179``)
- ``segcls/densepose/gray/ID.png``            processed part labels, 'L', 0 background, 1..14 parts
- ``segcls/densepose_points/gray/ID.png``     point annotations, 255 unlabelled
- ``seginst/pmi_0.1_256/ID.png``              PMI-owt-ucm over-segmentation ids
- ``lists/SPLIT.txt``                         one ID a line, or the reference's lists
                                              (``images/... segcls/... seginst/...`` a line)

Horizontal flips swap left and right parts (``PART_FLIP``, from ``spml/data/datasets/densepose_dataset.py``),
so the flip is done here, before the configured albumentations pipeline (which must not flip again).
:func:`write_synthetic_densepose` writes a small set in this layout for tests and CPU runs.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .formats import DataFormatError, read_image, read_label_png, write_split_list
from .supervision import SEGMENT_PAD, dilate_labels, missing_segments_message, read_segments
from .transforms import IMAGENET_MEAN, IMAGENET_STD, build_pipeline, normalize_image
from .voc import pad_collate

PART_NAMES = ("background", "torso", "right hand", "left hand", "left foot", "right foot", "right thigh",
              "left thigh", "right leg", "left leg", "left arm", "right arm", "left forearm", "right forearm",
              "head")
#: label after a horizontal flip (SPML densepose_dataset.py: part_label_remap)
PART_FLIP = np.arange(256, dtype=np.uint8)
PART_FLIP[:15] = [0, 1, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 14]


class DensePoseLayout:
    """Where things live; ``gt_dir`` / ``points_dir`` / ``segments_dir`` are relative to ``root``."""

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


class DensePoseParts(Dataset):
    """One split; yields the batch contract: image, name, cls (14 parts), mask (GT), weak (points), segments."""

    def __init__(self, root: str | Path, split: str, num_classes: int = 15, load_mask: bool = True,
                 load_points: bool = True, load_segments: bool = True, point_dilation: int = 1,
                 flip_prob: float = 0.0, transforms: Sequence[Mapping] | None = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, seed: int = 0,
                 **layout_kwargs):
        self.layout = DensePoseLayout(root, **layout_kwargs)
        self.split = split
        self.ids = self.layout.split_ids(split)
        self.num_classes = num_classes
        self.load_mask, self.load_points, self.load_segments = load_mask, load_points, load_segments
        self.point_dilation = point_dilation
        self.flip_prob = flip_prob
        self.mean, self.std = tuple(mean), tuple(std)
        keys = [k for k, on in (("mask", load_mask), ("weak", load_points), ("segments", load_segments)) if on]
        self.pipeline = build_pipeline(transforms, keys)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.ids)

    def _read(self, image_id: str) -> dict:
        image = read_image(self.layout.image_path(image_id))
        sample = {"image": image}
        if self.load_mask:
            sample["mask"] = read_label_png(self.layout.gt_path(image_id), self.num_classes)
        if self.load_points:
            sample["weak"] = dilate_labels(read_label_png(self.layout.points_path(image_id), self.num_classes),
                                           self.point_dilation)
        if self.load_segments:
            path = self.layout.segments_path(image_id)
            if not path.is_file():
                raise FileNotFoundError(missing_segments_message(path))
            sample["segments"] = read_segments(path)
        for key, value in sample.items():
            if key != "image" and value.shape != image.shape[:2]:
                raise DataFormatError(f"{image_id}: {key} is {value.shape} but the image is {image.shape[:2]}")
        return sample

    @staticmethod
    def flip(sample: dict) -> dict:
        """Mirror every map; part ids in ``mask`` / ``weak`` swap left and right."""
        out = {}
        for key, value in sample.items():
            value = np.ascontiguousarray(value[:, ::-1])
            out[key] = PART_FLIP[value] if key in ("mask", "weak") else value
        return out

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        sample = self._read(image_id)
        source = sample.get("weak", sample.get("mask"))
        cls = np.zeros(self.num_classes - 1, np.float32)
        if source is not None:
            present = np.unique(source)
            present = present[(present > 0) & (present < self.num_classes)]
            cls[present - 1] = 1.0
        if self.flip_prob and self.rng.random() < self.flip_prob:
            sample = self.flip(sample)
        out = self.pipeline(**sample)
        result = {"name": image_id, "cls": torch.from_numpy(cls),
                  "image": torch.from_numpy(normalize_image(out["image"], self.mean, self.std)),
                  "size": torch.tensor(sample["image"].shape[:2])}
        for key in ("mask", "weak", "segments"):
            if key in out:
                result[key] = torch.from_numpy(np.ascontiguousarray(out[key]).astype(np.int64))
        return result


class DensePoseDataModule(pl.LightningDataModule):
    """Train on points (+ over-segmentations), validate on the processed DensePose part labels."""

    def __init__(self, root: str, num_classes: int = 15, class_names: Sequence[str] = PART_NAMES,
                 train_split: str = "train2014", val_split: str = "minival2014", batch_size: int = 4,
                 val_batch_size: int = 1, num_workers: int = 4, train_transforms: Sequence[Mapping] | None = None,
                 val_transforms: Sequence[Mapping] | None = None, point_dilation: int = 1, flip_prob: float = 0.5,
                 synthetic: Mapping | None = None, supervision=None, layout: Mapping | None = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 crop_size: int | None = None):
        super().__init__()
        self.crop_size = crop_size  # referenced by the transform list in conf/dataset/densepose.yaml
        self.root, self.num_classes, self.class_names = root, num_classes, list(class_names)
        self.train_split, self.val_split = train_split, val_split
        self.batch_size, self.val_batch_size, self.num_workers = batch_size, val_batch_size, num_workers
        self.train_transforms, self.val_transforms = train_transforms, val_transforms
        self.point_dilation, self.flip_prob = point_dilation, flip_prob
        self.synthetic = dict(synthetic) if synthetic else None
        self.layout = dict(layout or {})
        self.mean, self.std = mean, std
        self.train_set: Optional[DensePoseParts] = None
        self.val_set: Optional[DensePoseParts] = None
        # ``supervision`` (from conf/supervision) is ignored: DensePose is trained on its points

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            write_synthetic_densepose(self.root, **self.synthetic)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()
        common = dict(num_classes=self.num_classes, mean=self.mean, std=self.std, **self.layout)
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = DensePoseParts(self.root, self.train_split, load_mask=False,
                                            point_dilation=self.point_dilation, flip_prob=self.flip_prob,
                                            transforms=self.train_transforms, **common)
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = DensePoseParts(self.root, self.val_split, load_points=False, load_segments=False,
                                          transforms=self.val_transforms, **common)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.num_workers, collate_fn=pad_collate)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.val_batch_size, shuffle=False,
                          num_workers=self.num_workers, collate_fn=pad_collate)


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
