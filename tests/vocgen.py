"""A second VOC-layout generator, unlike the embedded synthetic set, for testing what users run.

Why: defaults tuned on ``wsss.data.synthetic`` can silently fit that one generator. This writes a
VOC 2012 devkit folder the way a user's data looks (``JPEGImages/``, palette ``SegmentationClass/``
with a void band, grayscale ``SegmentationClassAug/``, ``Annotations/`` XML, ``ImageSets/Segmentation``
lists, no ``cls_labels.npy``) with other textures (speckle, zigzag, concentric squares, blotches,
cross-hatch), star-shaped blobs, cloudy backgrounds and images of varying size (default 150-260 px a
side). ``weak=True`` adds the weak-label folders the README documents (``scribble/``, ``points/``,
``hed/``, ``saliency/``, ``cam/`` score dicts, and SPML's processed ``scribble/dilate_*`` and ``cam/seam*``
folders) so every supervision and recipe can run on it.
"""
from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
from PIL import Image
from scipy import ndimage

from wsss.data.formats import VOC_CLASSES, save_score_dict, write_label_png, write_split_list

SPML_PROCESSED = ("scribble/dilate_3", "scribble/dilate_6_0.0", "cam/seam_a6_th0.2", "cam/seambox_a6_th0.5")
PATTERNS = ("speckle", "zigzag", "squares", "blotch", "hatch")


def _colour(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255


def class_look(k: int) -> Tuple[np.ndarray, np.ndarray, str, float]:
    """Two colours, a pattern and its period for foreground class k (1-based)."""
    hue = ((k - 1) * 0.381966 + 0.05) % 1.0
    sat = (0.55, 0.8, 0.95)[k % 3]
    val = (0.95, 0.7, 0.85, 0.55)[k % 4]
    return (_colour(hue, sat, val), _colour(hue + 0.5, sat * 0.6, val * 0.6), PATTERNS[k % len(PATTERNS)],
            (5.0, 8.0, 11.0, 14.0)[(k * 3) % 4])


def _pattern(kind: str, yy, xx, period: float, rng) -> np.ndarray:
    if kind == "speckle":
        return (rng.random(yy.shape) < 0.35).astype(np.float32)
    if kind == "zigzag":
        return ((np.abs(((xx / period) % 2) - 1) * period + yy) % period < period / 2).astype(np.float32)
    if kind == "squares":
        cy, cx = yy.mean(), xx.mean()
        return ((np.maximum(np.abs(yy - cy), np.abs(xx - cx)) // (period / 2)) % 2).astype(np.float32)
    if kind == "blotch":
        return (ndimage.gaussian_filter(rng.random(yy.shape), period / 3) > 0.5).astype(np.float32)
    return (((xx + yy) % period < 2) | ((xx - yy) % period < 2)).astype(np.float32)


def _clouds(rng, h: int, w: int) -> np.ndarray:
    out = np.zeros((h, w, 3), np.float32)
    for sigma, amp in ((24, 50), (8, 20), (2, 8)):
        out += amp * ndimage.gaussian_filter(rng.standard_normal((h, w, 3)), (sigma, sigma, 0)) * sigma ** 0.5
    grey = rng.uniform(70, 190)
    return grey + out.mean(axis=2, keepdims=True) * 0.8 + out * 0.2


def _blob(rng, h: int, w: int) -> np.ndarray:
    """A star-shaped region of 20-55 % of the shorter side."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    r = rng.uniform(0.1, 0.28) * min(h, w)
    cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
    ang = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + sum(rng.uniform(0, 0.25) * np.cos(f * ang + rng.uniform(0, 6.3)) for f in (2, 3, 5))
    return np.hypot(yy - cy, xx - cx) < r * wobble


def render(rng, num_fg: int, size_range: Sequence[int]):
    h, w = (int(rng.integers(size_range[0], size_range[1] + 1)) for _ in range(2))
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    img = _clouds(rng, h, w)
    label = np.zeros((h, w), np.uint8)
    classes = rng.choice(np.arange(1, num_fg + 1), size=int(rng.integers(1, 3)), replace=False)
    for k in [int(c) for c in classes for _ in range(int(rng.integers(1, 3)))]:
        region = _blob(rng, h, w)
        c1, c2, kind, period = class_look(k)
        pat = _pattern(kind, yy, xx, period * rng.uniform(0.85, 1.15), rng)[..., None]
        tint = rng.uniform(0.9, 1.1)
        img[region] = ((c1 * pat + c2 * (1 - pat)) * tint)[region]
        label[region] = k
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), label


def _xml(image_id: str, label: np.ndarray, names: Sequence[str]) -> str:
    objs = []
    for k in np.unique(label):
        if k == 0:
            continue
        comps, n = ndimage.label(label == k)
        for sl in ndimage.find_objects(comps):
            y, x = sl
            objs.append(f"<object><name>{names[k]}</name><truncated>0</truncated><difficult>0</difficult>"
                        f"<bndbox><xmin>{x.start + 1}</xmin><ymin>{y.start + 1}</ymin><xmax>{x.stop}</xmax>"
                        f"<ymax>{y.stop}</ymax></bndbox></object>")
    h, w = label.shape
    return (f"<annotation><filename>{image_id}.jpg</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{''.join(objs)}</annotation>")


def _weak(rng, label: np.ndarray, num_classes: int):
    """Scribbles (eroded class regions' skeleton-ish lines), points, superpixels, saliency, CAM dicts."""
    h, w = label.shape
    scribble = np.full((h, w), 255, np.uint8)
    points = np.full((h, w), 255, np.uint8)
    for k in np.unique(label):
        inner = ndimage.binary_erosion(label == k, iterations=3)
        ys, xs = np.nonzero(inner if inner.any() else label == k)
        pick = rng.choice(len(ys), size=min(len(ys), 40), replace=False)
        scribble[ys[pick], xs[pick]] = k
        points[ys[pick[:2]], xs[pick[:2]]] = k
    cells = (np.arange(h)[:, None] // 10) * ((w + 9) // 10) + np.arange(w)[None, :] // 10
    _, segments = np.unique(cells.astype(np.int64) * 32 + label, return_inverse=True)
    saliency = (ndimage.gaussian_filter((label > 0).astype(np.float32), 2) * 255).astype(np.uint8)
    cams = {int(k) - 1: ndimage.gaussian_filter((label == k).astype(np.float32), 3)
            for k in np.unique(label) if 0 < k < num_classes}
    return scribble, points, segments.reshape(h, w).astype(np.uint16), saliency, cams


def write_voc_folder(root: str | Path, num_train: int = 160, num_val: int = 40, num_classes: int = 21,
                     size_range: Sequence[int] = (150, 260), seed: int = 1, weak: bool = False,
                     prefix: str = "2011_") -> Path:
    """Write the folder (ids ``<prefix>NNNNNN``, train first) and return it."""
    root = Path(root)
    names = list(VOC_CLASSES[:num_classes]) if num_classes <= len(VOC_CLASSES) else \
        [f"class{i}" for i in range(num_classes)]
    dirs = ["JPEGImages", "SegmentationClass", "SegmentationClassAug", "Annotations", "ImageSets/Segmentation"]
    if weak:
        dirs += ["scribble", "points", "hed", "saliency", "cam", *SPML_PROCESSED]
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = [f"{prefix}{i:06d}" for i in range(num_train + num_val)]
    for image_id in ids:
        img, label = render(rng, num_classes - 1, size_range)
        Image.fromarray(img).save(root / "JPEGImages" / f"{image_id}.jpg", quality=92)
        write_label_png(root / "SegmentationClassAug" / f"{image_id}.png", label, palette=False)
        edge = ndimage.morphological_gradient(label, size=3) > 0
        write_label_png(root / "SegmentationClass" / f"{image_id}.png", np.where(edge, 255, label).astype(np.uint8))
        (root / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, label, names))
        if weak:
            scribble, points, segments, saliency, cams = _weak(rng, label, num_classes)
            write_label_png(root / "scribble" / f"{image_id}.png", scribble, palette=False)
            write_label_png(root / "points" / f"{image_id}.png", points, palette=False)
            Image.fromarray(segments.astype(np.int32)).convert("I;16").save(root / "hed" / f"{image_id}.png")
            Image.fromarray(saliency, mode="L").save(root / "saliency" / f"{image_id}.png")
            save_score_dict(root / "cam" / f"{image_id}.npy", cams)
            dilated = {"scribble/dilate_3": ndimage.grey_dilation(np.where(scribble == 255, 0, scribble + 1), 3),
                       "scribble/dilate_6_0.0": ndimage.grey_dilation(np.where(points == 255, 0, points + 1), 6)}
            for folder, grown in dilated.items():  # SPML's processed files: already dilated, 255 unlabelled
                write_label_png(root / folder / f"{image_id}.png", np.where(grown == 0, 255, grown - 1).astype(np.uint8),
                                palette=False)
            for folder in ("cam/seam_a6_th0.2", "cam/seambox_a6_th0.5"):  # SPML's thresholded CAM labels
                write_label_png(root / folder / f"{image_id}.png", label, palette=False)
    lists = root / "ImageSets" / "Segmentation"
    write_split_list(lists / "train.txt", ids[:num_train])
    write_split_list(lists / "train_aug.txt", ids[:num_train])
    write_split_list(lists / "val.txt", ids[num_train:])
    return root


if __name__ == "__main__":  # python tests/vocgen.py OUT [num_train num_val]
    import sys

    args = sys.argv[1:]
    out = write_voc_folder(args[0], *(int(a) for a in args[1:3]))
    print(out)
