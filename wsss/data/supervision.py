"""Weak supervision loaders: turn a data set's annotation files into the weak targets a method uses.

A loader is a callable ``loader(layout, image_id, sample)`` that the dataset calls once per sample
before augmentation (:class:`wsss.data.segmentation.SegmentationDataset`, any layout with a ``root``); it
adds HxW numpy maps to ``sample`` and declares each in ``targets`` (:class:`~wsss.data.targets.TargetSpec`:
dtype, interpolation, padding), so the augmentation pipeline moves them with the image as they need:

* ``weak``: uint8 class ids, 255 = unlabelled (scribbles, points, or CAM-derived pixel labels);
* ``segments``: uint16 over-segmentation ids (HED-owt-ucm for VOC, PMI-owt-ucm for DensePose);
  id 255 is never used (ids >= 255 are shifted by one), so after padding 255 means "outside the image".

Supervision types (``conf/supervision/<name>.yaml``), with SPML's processing (twke18/SPML README):

* ``tag``: CAM-derived labels: background = (1 - max fg CAM) ** alpha (alpha 6), argmax, pixels whose
  winning probability is below 0.2 unlabelled;
* ``box``: CAM min-max normalised to 0..1 inside each box, same rule with threshold 0.5, background
  outside all boxes;
* ``scribble``: scribble PNGs dilated with a 3x3 square (100/80/50/30 % variants are other folders);
* ``point``: point PNGs dilated with a 6x6 square;
* ``saliency``: image tags plus a saliency map per image (EPS / HSC): ``saliency/ID.png`` read as the
  references do (``.convert("RGB")``, /255, mean over the channels), a float target in 0..1 resized bicubic
  like the image and padded with 0 (:func:`~wsss.data.targets.soft_map`), never a label map.

CAMs are read from ``label_dir`` (already thresholded PNGs, e.g. SPML's ``cam/seam_a6_th0.2``) or
``cam_dir`` (SEAM score dicts ``ID.npy``). The embedded synthetic set has no CAM method output; for it
(``synthetic.json`` in the root) stand-in CAMs are made from the GT masks (blurred class masks), so that
the tag/box recipes run end to end without a first stage.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from scipy import ndimage

from .formats import IGNORE_INDEX, VOC_CLASSES, DataFormatError, load_score_dict, read_label_png
from .targets import BICUBIC, NEAREST, TargetSpec, label_map, soft_map

SEGMENT_PAD = 255
#: over-segmentation ids: never interpolated; padding gets the id no region has
SEGMENTS = TargetSpec("segments", "int64", NEAREST, SEGMENT_PAD)


def _root(layout) -> Path:
    """The data root of a layout object (``.root``) or a plain path."""
    if isinstance(layout, (str, Path)):
        return Path(layout)
    return Path(layout.root)


def _resolve(layout, folder: str) -> Path:
    path = Path(folder)
    return path if path.is_absolute() else _root(layout) / path


# ----- over-segmentation ------------------------------------------------------------------------
def read_segments(path: Path) -> np.ndarray:
    """An over-segmentation PNG (8/16/32-bit grayscale or RGB-coded ids) as uint16 ids without 255."""
    with Image.open(path) as img:
        img.load()
        arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., :3].astype(np.int64)
        arr = (arr[..., 0] << 16) | (arr[..., 1] << 8) | arr[..., 2]
    arr = arr.astype(np.int64)
    if arr.max() >= SEGMENT_PAD:  # keep 255 free for padding; many segments: compact first
        _, arr = np.unique(arr, return_inverse=True)
        arr = arr.reshape(img.size[1], img.size[0])
        arr = np.where(arr >= SEGMENT_PAD, arr + 1, arr)
    if arr.max() >= 65535:
        raise DataFormatError(f"{path}: {int(arr.max())} over-segmentation regions; at most 65534 supported")
    return arr.astype(np.uint16)


def dilate_labels(weak: np.ndarray, size: int) -> np.ndarray:
    """Grow labelled pixels into unlabelled ones with a ``size x size`` square (labelled pixels keep
    their class; where classes meet, the higher id wins)."""
    if size <= 1:
        return weak
    labelled = weak != IGNORE_INDEX
    shifted = np.where(labelled, weak.astype(np.int32) + 1, 0)
    grown = ndimage.maximum_filter(shifted, size=size, mode="constant", cval=0)
    out = np.where(grown > 0, grown - 1, IGNORE_INDEX)
    return np.where(labelled, weak, out).astype(np.uint8)


def cam_to_labels(cams: np.ndarray, alpha: float, threshold: float, region: Optional[np.ndarray] = None
                  ) -> np.ndarray:
    """SPML's CAM rule: ``cams`` (C-1) x H x W foreground scores in 0..1 -> uint8 labels.

    bg = (1 - max_c cam_c) ** alpha; label = argmax over [bg, cams]; winning score < threshold ->
    unlabelled (255). ``region`` (bool HxW) limits the rule; outside it pixels are background.
    """
    fg_max = cams.max(axis=0) if cams.shape[0] else np.zeros(cams.shape[1:], np.float32)
    probs = np.concatenate([((1.0 - fg_max) ** alpha)[None], cams], axis=0)
    label = probs.argmax(axis=0)
    label = np.where(probs.max(axis=0) < threshold, IGNORE_INDEX, label)
    if region is not None:
        label = np.where(region, label, 0)
    return label.astype(np.uint8)


def synthetic_cams(mask: np.ndarray, num_classes: int, image_id: str) -> np.ndarray:
    """Stand-in CAMs for the synthetic set: blurred GT class masks with a per-image random gain."""
    rng = np.random.default_rng(zlib.crc32(image_id.encode()))
    h, w = mask.shape
    sigma = 0.04 * min(h, w)
    cams = np.zeros((num_classes - 1, h, w), np.float32)
    for c in np.unique(mask):
        if 0 < c < num_classes:
            blurred = ndimage.gaussian_filter((mask == c).astype(np.float32), sigma)
            cams[c - 1] = np.clip(blurred / max(blurred.max(), 1e-6) * rng.uniform(0.8, 1.0), 0, 1)
    return cams


def read_voc_boxes(path: Path, class_names: Sequence[str]) -> List[Tuple[int, int, int, int, int]]:
    """VOC XML boxes as ``(class id, x1, y1, x2, y2)``, 0-based inclusive pixel coordinates."""
    if not path.is_file():
        raise FileNotFoundError(
            f"box annotation not found: {path}; supervision=box reads VOC XML files in Annotations/")
    index = {n: i for i, n in enumerate(class_names)}
    boxes = []
    for obj in ET.parse(path).getroot().iter("object"):
        name = obj.findtext("name", "").strip()
        if name not in index:
            raise DataFormatError(f"{path}: object class {name!r} is not one of {list(class_names)}")
        bb = obj.find("bndbox")
        x1, y1, x2, y2 = (int(round(float(bb.findtext(k)))) - 1 for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((index[name], x1, y1, x2, y2))
    return boxes


def box_cam_labels(cams: np.ndarray, boxes, alpha: float, threshold: float) -> np.ndarray:
    """SPML's box rule: each box's class CAM min-max normalised inside the box, then the CAM rule."""
    c1, h, w = cams.shape
    scores = np.zeros_like(cams)
    inside = np.zeros((h, w), bool)
    for cls, x1, y1, x2, y2 in boxes:
        if cls <= 0 or cls > c1:
            continue
        ys, xs = slice(max(y1, 0), min(y2, h - 1) + 1), slice(max(x1, 0), min(x2, w - 1) + 1)
        patch = cams[cls - 1, ys, xs]
        if patch.size == 0:
            continue
        lo, hi = patch.min(), patch.max()
        norm = (patch - lo) / (hi - lo) if hi > lo else np.ones_like(patch)
        scores[cls - 1, ys, xs] = np.maximum(scores[cls - 1, ys, xs], norm)
        inside[ys, xs] = True
    return cam_to_labels(scores, alpha, threshold, region=inside)


# ----- loaders ----------------------------------------------------------------------------------
class SupervisionLoader:
    """Base: adds ``weak`` (from :meth:`weak_labels`) and, when available, ``segments``.

    ``segments_dir``: over-segmentation folder under the root (None: none). ``require_segments``: a
    missing file is an error (methods that need them, like SPML, check the batch anyway).
    """

    name = "base"
    targets: Tuple[TargetSpec, ...] = (label_map("weak"), SEGMENTS)

    def __init__(self, segments_dir: Optional[str] = "hed", require_segments: bool = False,
                 num_classes: Optional[int] = None):
        self.segments_dir = segments_dir
        self.require_segments = require_segments
        self.num_classes = num_classes

    def weak_labels(self, layout, image_id: str, sample: dict) -> Optional[np.ndarray]:
        return None

    def segments(self, layout, image_id: str) -> Optional[np.ndarray]:
        if not self.segments_dir:
            return None
        path = _resolve(layout, self.segments_dir) / f"{image_id}.png"
        if not path.is_file():
            if self.require_segments:
                raise FileNotFoundError(missing_segments_message(path))
            return None
        return read_segments(path)

    def __call__(self, layout, image_id: str, sample: dict) -> dict:
        shape = sample["image"].shape[:2]
        weak = self.weak_labels(layout, image_id, sample)
        if weak is not None:
            _check_shape(weak, shape, f"weak labels of {image_id}")
            sample["weak"] = weak
        seg = self.segments(layout, image_id)
        if seg is not None:
            _check_shape(seg, shape, f"over-segmentation of {image_id}")
            sample["segments"] = seg
        return sample


def missing_segments_message(path: Path) -> str:
    return (f"over-segmentation not found: {path}. SPML groups pixels inside the regions of an "
            "over-segmentation; provide one PNG of region ids per image (VOC: SegSort's HED-owt-ucm masks "
            "unzipped into VOC2012/hed/; DensePose: SPML's PMI-owt-ucm masks in seginst/pmi_0.1_256/), or "
            "point supervision.loader.segments_dir at your folder")


def _check_shape(arr: np.ndarray, shape, what: str) -> None:
    if arr.shape != tuple(shape):
        raise DataFormatError(f"{what} is {arr.shape[0]}x{arr.shape[1]} but the image is {shape[0]}x{shape[1]}")


class _CamSource:
    """Where CAM-derived labels come from: thresholded PNGs, SEAM score dicts, or synthetic stand-ins."""

    def __init__(self, label_dir: Optional[str], cam_dir: Optional[str], what: str):
        self.label_dir, self.cam_dir, self.what = label_dir, cam_dir, what

    def png(self, layout, image_id: str) -> Optional[np.ndarray]:
        if self.label_dir:
            path = _resolve(layout, self.label_dir) / f"{image_id}.png"
            if path.is_file():
                return read_label_png(path)
        return None

    def cams(self, layout, image_id: str, shape, num_classes: int) -> np.ndarray:
        if self.cam_dir:
            path = _resolve(layout, self.cam_dir) / f"{image_id}.npy"
            if path.is_file():
                scores = load_score_dict(path, shape=shape, num_fg=num_classes - 1)
                cams = np.zeros((num_classes - 1,) + tuple(shape), np.float32)
                for k, v in scores.items():
                    cams[k] = v
                return cams
        root = _root(layout)
        if (root / "synthetic.json").is_file():
            return synthetic_cams(_gt_mask(root, image_id), num_classes, image_id)
        where = [str(_resolve(layout, d)) for d in (self.label_dir, self.cam_dir) if d]
        raise FileNotFoundError(
            f"no CAM for '{image_id}' ({self.what} supervision): looked in {where}. Provide thresholded label "
            f"PNGs (SPML's processed CAMs, e.g. VOC2012/cam/seam_a6_th0.2/ID.png) or SEAM-style score dicts "
            f"ID.npy (e.g. from `python -m wsss.infer` of a CAM method) and set supervision.loader.label_dir / "
            f"supervision.loader.cam_dir")


def _gt_mask(root: Path, image_id: str) -> np.ndarray:
    for folder in ("SegmentationClassAug", "SegmentationClass"):
        path = root / folder / f"{image_id}.png"
        if path.is_file():
            return read_label_png(path)
    raise FileNotFoundError(f"synthetic set {root}: no GT mask for {image_id}")


def _class_count(loader, layout) -> int:
    if loader.num_classes:
        return int(loader.num_classes)
    names = _root(layout) / "class_names.txt"
    if names.is_file():
        return len([n for n in names.read_text().split("\n") if n.strip()])
    return len(VOC_CLASSES)


class TagSupervision(SupervisionLoader):
    """Image tags; SPML learns from CAM-derived pixel labels (alpha 6, threshold 0.2)."""

    name = "tag"

    def __init__(self, label_dir: Optional[str] = "cam/seam_a6_th0.2", cam_dir: Optional[str] = "cam",
                 alpha: float = 6.0, threshold: float = 0.2, require_weak: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.source = _CamSource(label_dir, cam_dir, "tag")
        self.alpha, self.threshold = alpha, threshold
        self.require_weak = require_weak

    def weak_labels(self, layout, image_id: str, sample: dict) -> Optional[np.ndarray]:
        """CAM-derived labels; without CAMs (plain image-level training) nothing unless required."""
        png = self.source.png(layout, image_id)
        if png is not None:
            return png
        shape = sample["image"].shape[:2]
        try:
            cams = self.source.cams(layout, image_id, shape, _class_count(self, layout))
        except FileNotFoundError:
            if self.require_weak:
                raise
            return None
        return cam_to_labels(cams, self.alpha, self.threshold)


class BoxSupervision(SupervisionLoader):
    """Bounding boxes (VOC XML); SPML labels pixels by CAM normalised inside each box (threshold 0.5)."""

    name = "box"

    def __init__(self, label_dir: Optional[str] = "cam/seambox_a6_th0.5", cam_dir: Optional[str] = "cam",
                 annotations_dir: str = "Annotations", alpha: float = 6.0, threshold: float = 0.5,
                 class_names: Optional[Sequence[str]] = None, **kwargs):
        super().__init__(**kwargs)
        self.source = _CamSource(label_dir, cam_dir, "box")
        self.annotations_dir = annotations_dir
        self.alpha, self.threshold = alpha, threshold
        self.class_names = list(class_names) if class_names else None

    def _names(self, layout) -> List[str]:
        if self.class_names:
            return self.class_names
        path = _root(layout) / "class_names.txt"
        if path.is_file():
            return [n.strip() for n in path.read_text().split("\n") if n.strip()]
        return list(VOC_CLASSES)

    def weak_labels(self, layout, image_id: str, sample: dict) -> np.ndarray:
        png = self.source.png(layout, image_id)
        if png is not None:
            return png
        names = self._names(layout)
        boxes = read_voc_boxes(_resolve(layout, self.annotations_dir) / f"{image_id}.xml", names)
        shape = sample["image"].shape[:2]
        cams = self.source.cams(layout, image_id, shape, len(names))
        return box_cam_labels(cams, boxes, self.alpha, self.threshold)


class _LabelPngSupervision(SupervisionLoader):
    default_dir = ""
    default_dilation = 1

    def __init__(self, label_dir: Optional[str] = None, dilation: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.label_dir = label_dir or self.default_dir
        self.dilation = self.default_dilation if dilation is None else int(dilation)

    def weak_labels(self, layout, image_id: str, sample: dict) -> np.ndarray:
        path = _resolve(layout, self.label_dir) / f"{image_id}.png"
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.name} annotation not found: {path}; put one label PNG per image (class ids, 255 = "
                f"unlabelled) there or set supervision.loader.label_dir")
        return dilate_labels(read_label_png(path), self.dilation)


class ScribbleSupervision(_LabelPngSupervision):
    """Scribbles (ScribbleSup, processed as rloss does), dilated 3x3 as SPML."""

    name = "scribble"
    default_dir = "scribble"
    default_dilation = 3


class PointSupervision(_LabelPngSupervision):
    """Points (one labelled pixel per object / background click), dilated 6x6 as SPML."""

    name = "point"
    default_dir = "points"
    default_dilation = 6


#: PNG modes a saliency map may have: 8-bit grey or colour (0..255); others (palette, 16-bit, float) are refused
SALIENCY_MODES = ("1", "L", "LA", "RGB", "RGBA")


def read_saliency(path: Path) -> np.ndarray:
    """A saliency PNG as float32 HxW in 0..1, as EPS / HSC read it: ``.convert("RGB")``, /255, channel mean
    (halbielee/EPS@0c2cdd0 metadata/dataset.py:84,109,119; Wu0409/HSC_WSSS@402ee60 data/dataset.py:84,109,120)."""
    with Image.open(path) as img:
        if img.mode not in SALIENCY_MODES:
            raise DataFormatError(
                f"{path}: saliency map has PNG mode {img.mode!r}; expected an 8-bit grayscale or RGB PNG "
                f"(modes {list(SALIENCY_MODES)}, 0 = background, 255 = salient), e.g. the PFAN maps of the EPS README")
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
    return (rgb / 255.0).mean(axis=2).astype(np.float32)


def missing_saliency_message(path: Path) -> str:
    return (f"saliency map not found: {path}. supervision=saliency reads one 8-bit grayscale or RGB PNG per "
            "training image (0..255; EPS and HSC use the PFAN maps linked in the halbielee/EPS README); unpack them "
            "into ROOT/saliency/ or point supervision.loader.saliency_dir at their folder")


class SaliencySupervision(SupervisionLoader):
    """Image tags plus a saliency map (EPS, HSC): adds ``saliency`` (float32 HxW, 0..1).

    ``interpolation``: how augmentation resizes it (``bicubic``: the references resize image and saliency
    with the same PIL bicubic ``RandomResizeLong``; ``bilinear``); padding is 0 (= not salient).
    """

    name = "saliency"

    def __init__(self, saliency_dir: str = "saliency", interpolation: str = BICUBIC, **kwargs):
        kwargs.setdefault("segments_dir", None)
        super().__init__(**kwargs)
        self.saliency_dir = saliency_dir
        self.saliency_spec = soft_map("saliency", interpolation)
        self.targets = (label_map("weak"), SEGMENTS, self.saliency_spec)

    def check_files(self, layout, image_ids) -> None:
        """Every map of the split exists, before training starts (sizes and modes are checked as each is read)."""
        folder = _resolve(layout, self.saliency_dir)
        missing = [i for i in image_ids if not (folder / f"{i}.png").is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(image_ids)} saliency maps are missing, e.g. "
                                    + missing_saliency_message(folder / f"{missing[0]}.png"))

    def __call__(self, layout, image_id: str, sample: dict) -> dict:
        super().__call__(layout, image_id, sample)
        path = _resolve(layout, self.saliency_dir) / f"{image_id}.png"
        if not path.is_file():
            raise FileNotFoundError(missing_saliency_message(path))
        saliency = read_saliency(path)
        shape = sample["image"].shape[:2]
        if saliency.shape != tuple(shape):
            raise DataFormatError(f"{path}: saliency map is {saliency.shape[0]}x{saliency.shape[1]} but the image "
                                  f"is {shape[0]}x{shape[1]}; saliency maps must have their image's size")
        sample["saliency"] = saliency
        return sample


SUPERVISIONS: Dict[str, type] = {c.name: c for c in (TagSupervision, BoxSupervision, ScribbleSupervision,
                                                       PointSupervision, SaliencySupervision)}
