"""A small, deterministic PASCAL-VOC-format data set written to disk: the embedded default.

Why: ``python -m wsss.train`` must run on a fresh machine with no download, and every method must
be exercised through the *real* file formats (palette PNGs with a 255 boundary band, SBD-style
grayscale labels, VOC XML boxes, SEAM's ``cls_labels.npy``, SPML-style weak labels). So instead of
an in-memory toy, :func:`ensure_synthetic_voc` writes a VOC 2012 devkit folder once and the normal
VOC datamodule reads it.

Content. Each foreground class has its own colour distribution (hue / saturation / value) *and*
texture (stripes, checker, dots or rings at a class-specific frequency and orientation), jittered per
instance; backgrounds are low-saturation gradients with low-contrast noise, so a network must learn
class appearance to localise objects from image-level tags. Images hold 1-4 objects (ellipses,
rotated rectangles, polygons; 15-60 % of the shorter image side; later objects occlude earlier ones)
of 1-3 classes.

Layout under ``root`` (ids ``2000_000001`` ...; train ids first, then val ids):

- ``JPEGImages/ID.jpg``            RGB JPEG, quality 95
- ``SegmentationClass/ID.png``     palette PNG (VOC colours), class ids, 255 = void band: every pixel
                                   with a 8-neighbour of another instance/background (about 2 px wide)
- ``SegmentationObject/ID.png``    palette PNG, instance ids 1..n in paint order, same 255 band
- ``SegmentationClassAug/ID.png``  grayscale ('L') class ids *without* band (like SBD's aug labels)
- ``Annotations/ID.xml``           VOC XML; one ``<object>`` per visible instance; the box is the
                                   extent of the instance's *visible* pixels, 1-based inclusive
                                   (VOC's convention); ``truncated`` = box touches the image border
- ``ImageSets/Segmentation/{train,val,train_aug}.txt``  ``ID`` a line; train_aug = train
- ``cls_labels.npy``               SEAM's format: dict id -> float32 multi-hot over fg classes
- ``scribble/ID.png``              'L' label PNG, 255 = unlabelled; a 1 px wiggly stroke inside each
                                   object (>= 2 px from its edge) and 2-3 strokes on the background
                                   (>= 4 px from objects); SPML's loader dilates them 3x3
- ``points/ID.png``                'L' label PNG, 255 = unlabelled; one pixel per object (deep inside
                                   it) and 3-5 background pixels
- ``hed/ID.png``                   over-segmentation: 16-bit grayscale PNG (PIL mode 'I;16') of
                                   superpixel ids 0..K-1 (jittered ~8 px grid cells split by object
                                   boundaries; about 1 object in 10 is not split off, like a missed
                                   edge; a superpixel is not guaranteed to be connected)
- ``saliency/ID.png``              'L' saliency 0..255, high on objects, smooth noise elsewhere
- ``class_names.txt``              the ``num_classes`` names, background first
- ``synthetic.json``               the generation parameters; written last

The folder is built in a temporary sibling and renamed into place under an ``fcntl`` lock beside it
(``.ROOT.lock``), so a killed run never looks complete and concurrent callers generate once. The
generator owns ``root``: regeneration replaces the whole folder, and a non-empty folder that is not a
synthetic set is refused.
"""
from __future__ import annotations

import argparse
import colorsys
import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from wsss.data.formats import (
    IGNORE_INDEX,
    VOC_CLASSES,
    save_cls_labels_npy,
    write_label_png,
    write_split_list,
)

try:  # POSIX only; elsewhere concurrent generation is merely not serialised
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

log = logging.getLogger(__name__)

#: Bump when the generated content changes so existing sets are regenerated.
GENERATOR_VERSION = 1
SYNTHETIC_CLASSES: Tuple[str, ...] = tuple(VOC_CLASSES)
PARAMS_FILE = "synthetic.json"
ID_PREFIX = "2000_"
IMAGE_DIRS = ("JPEGImages", "SegmentationClass", "SegmentationObject", "SegmentationClassAug",
              "Annotations", "scribble", "points", "hed", "saliency")
_TEXTURES = ("stripes", "checker", "dots", "rings")


class SyntheticDataError(ValueError):
    """The requested synthetic set cannot be written where asked."""


# ----------------------------------------------------------------------------------------------
# Class appearance
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassStyle:
    """Appearance of one foreground class: two colours mixed by a periodic texture."""

    hue: float
    sat: float
    val: float
    hue2: float
    sat2: float
    val2: float
    texture: str
    freq: float      # cycles per pixel
    angle: float     # degrees


def class_style(class_id: int) -> ClassStyle:
    """Fixed appearance of class ``class_id`` (1..20); independent of the seed so classes mean the
    same thing in every generated set."""
    if not 1 <= class_id < len(SYNTHETIC_CLASSES):
        raise ValueError(f"foreground class id {class_id} outside 1..{len(SYNTHETIC_CLASSES) - 1}")
    k = class_id - 1
    hue = (k * 0.618034) % 1.0                     # golden-ratio spacing: neighbours far apart
    sat = 0.6 + 0.15 * ((k * 7) % 3)               # 0.60 / 0.75 / 0.90: well above backgrounds
    val = 0.6 + 0.12 * ((k * 5) % 4)               # 0.60 .. 0.96
    hue2 = (hue + (0.09 if k % 2 else -0.09)) % 1.0
    return ClassStyle(
        hue=hue, sat=sat, val=val, hue2=hue2, sat2=min(1.0, sat + 0.05), val2=val * 0.5,
        texture=_TEXTURES[k % len(_TEXTURES)],
        freq=(0.09, 0.15, 0.21, 0.12, 0.18)[(k * 3) % 5],
        angle=float((k * 37) % 180),
    )


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))),
                    dtype=np.float32) * 255.0


def _texture(kind: str, u: np.ndarray, v: np.ndarray, freq: float, phase: float) -> np.ndarray:
    """Pattern in [0, 1] over rotated object coordinates (u, v)."""
    two_pi = 2 * np.pi
    if kind == "stripes":
        return np.clip(0.5 + 1.5 * np.sin(two_pi * (freq * u + phase)), 0, 1)
    if kind == "checker":
        return (np.sin(two_pi * (freq * u + phase)) * np.sin(two_pi * (freq * v + phase)) > 0).astype(np.float32)
    if kind == "dots":
        period = 1.0 / freq
        du = np.mod(u + phase * period, period) - period / 2
        dv = np.mod(v + phase * period, period) - period / 2
        return ((du * du + dv * dv) < (0.3 * period) ** 2).astype(np.float32)
    if kind == "rings":
        return np.clip(0.5 + 1.5 * np.sin(two_pi * (freq * np.sqrt(u * u + v * v) + phase)), 0, 1)
    raise ValueError(f"unknown texture {kind!r}")


# ----------------------------------------------------------------------------------------------
# One image
# ----------------------------------------------------------------------------------------------
@dataclass
class _Sample:
    image: np.ndarray           # H x W x 3 uint8
    instances: np.ndarray       # H x W int32, 0 = background, 1..n visible instances
    classes: List[int]          # class id of instance i+1


def _smooth_noise(rng: np.random.Generator, shape: Tuple[int, int], cell: int, channels: int = 1) -> np.ndarray:
    """Band-limited noise in about [-1, 1]: a coarse random grid upsampled bilinearly."""
    h, w = shape
    gh, gw = h // cell + 2, w // cell + 2
    coarse = rng.uniform(-1, 1, size=(channels, gh, gw)).astype(np.float32)
    return _lerp_matrix(h, gh, cell) @ coarse @ _lerp_matrix(w, gw, cell).T


def _lerp_matrix(n: int, m: int, cell: int) -> np.ndarray:
    """n x m matrix that linearly interpolates m coarse samples spaced ``cell`` px apart."""
    pos = np.arange(n, dtype=np.float32) / cell
    lo = np.minimum(np.floor(pos).astype(int), m - 2)
    frac = pos - lo
    mat = np.zeros((n, m), dtype=np.float32)
    mat[np.arange(n), lo] = 1 - frac
    mat[np.arange(n), lo + 1] = frac
    return mat


def _background(rng: np.random.Generator, shape: Tuple[int, int], yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    h, w = shape
    # low saturation (<= 0.2) keeps background colours away from the class colours (>= 0.6)
    c1 = _hsv(rng.uniform(), rng.uniform(0.0, 0.2), rng.uniform(0.25, 0.9))
    c2 = _hsv(rng.uniform(), rng.uniform(0.0, 0.2), rng.uniform(0.25, 0.9))
    theta = rng.uniform(0, 2 * np.pi)
    g = (xx * np.cos(theta) + yy * np.sin(theta)) / max(h, w)
    g = (g - g.min()) / max(float(np.ptp(g)), 1e-6)
    img = c1[None, None] * (1 - g[..., None]) + c2[None, None] * g[..., None]
    img += 14.0 * _smooth_noise(rng, shape, int(rng.integers(6, 20)), 3).transpose(1, 2, 0)
    # faint grey texture so "textured" alone does not mean "object"
    f, a = rng.uniform(0.05, 0.25), rng.uniform(0, np.pi)
    img += rng.uniform(2.0, 7.0) * np.sin(2 * np.pi * f * (xx * np.cos(a) + yy * np.sin(a)))[..., None]
    return img


def _shape_mask(rng: np.random.Generator, shape: Tuple[int, int], yy: np.ndarray, xx: np.ndarray):
    """A random ellipse, rotated rectangle or polygon; returns (mask, centre, angle)."""
    h, w = shape
    side = min(h, w)
    extent = rng.uniform(0.15, 0.6) * side              # object diameter
    aspect = rng.uniform(0.6, 1.6)
    a = extent / 2 * math.sqrt(aspect)
    b = extent / 2 / math.sqrt(aspect)
    cy = rng.uniform(0.12, 0.88) * h
    cx = rng.uniform(0.12, 0.88) * w
    angle = rng.uniform(0, np.pi)
    kind = rng.choice(3)
    if kind == 2:
        n = int(rng.integers(5, 9))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(0.6, 1.0, n)
        px = cx + r * (a * np.cos(t) * np.cos(angle) - b * np.sin(t) * np.sin(angle))
        py = cy + r * (a * np.cos(t) * np.sin(angle) + b * np.sin(t) * np.cos(angle))
        canvas = Image.new("L", (w, h), 0)
        ImageDraw.Draw(canvas).polygon(list(zip(px.tolist(), py.tolist())), fill=1)
        mask = np.asarray(canvas, dtype=bool)
    else:
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        if kind == 0:
            mask = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        else:
            mask = (np.abs(u) <= a * 0.85) & (np.abs(v) <= b * 0.85)
    return mask, (cy, cx), angle


def _object_pixels(rng: np.random.Generator, style: ClassStyle, centre, angle: float,
                   yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Textured colour of one instance over the whole grid (masked by the caller)."""
    dh = rng.uniform(-0.02, 0.02)
    c1 = _hsv(style.hue + dh, style.sat + rng.uniform(-0.05, 0.05), style.val + rng.uniform(-0.07, 0.07))
    c2 = _hsv(style.hue2 + dh, style.sat2 + rng.uniform(-0.05, 0.05), style.val2 + rng.uniform(-0.05, 0.05))
    theta = np.deg2rad(style.angle + rng.uniform(-15, 15))
    freq = style.freq * rng.uniform(0.9, 1.1)
    cy, cx = centre
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    mix = rng.uniform(0.6, 0.9) * _texture(style.texture, u, v, freq, rng.uniform())
    img = c1[None, None] * (1 - mix[..., None]) + c2[None, None] * mix[..., None]
    # gentle shading across the object
    s = rng.uniform(-0.12, 0.12)
    ra = rng.uniform(0, 2 * np.pi)
    shade = 1 + s * ((xx - cx) * np.cos(ra) + (yy - cy) * np.sin(ra)) / max(xx.shape)
    return img * shade[..., None]


def _layout_classes(rng: np.random.Generator, num_fg: int) -> List[int]:
    n_obj = int(rng.choice([1, 2, 3, 4], p=[0.25, 0.3, 0.25, 0.2]))
    n_cls = int(rng.integers(1, min(3, n_obj, num_fg) + 1))
    chosen = rng.choice(np.arange(1, num_fg + 1), size=n_cls, replace=False)
    classes = list(chosen) + list(rng.choice(chosen, size=n_obj - n_cls))
    rng.shuffle(classes)
    return [int(c) for c in classes]


def _min_visible(shape) -> int:
    return max(20, int(0.004 * shape[0] * shape[1]))


def _render(rng: np.random.Generator, shape: Tuple[int, int], num_fg: int) -> _Sample:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    classes = _layout_classes(rng, num_fg)
    for _attempt in range(30):
        inst = np.zeros(shape, dtype=np.int32)
        placed = []
        for j, _c in enumerate(classes, start=1):
            mask, centre, angle = _shape_mask(rng, shape, yy, xx)
            inst[mask] = j
            placed.append((mask.sum(), centre, angle))
        visible = np.bincount(inst.ravel(), minlength=len(classes) + 1)[1:]
        own = np.array([p[0] for p in placed])
        ok = (visible >= _min_visible(shape)) & (visible >= 0.3 * own)
        if ok.all():
            break
    # keep only objects that stay clearly visible (at least one always does: the last painted)
    ok &= visible > 0
    if not ok.any():
        ok[np.argmax(visible)] = True
    img = _background(rng, shape, yy, xx)
    out = np.zeros(shape, dtype=np.int32)
    kept: List[int] = []
    for j, c in enumerate(classes, start=1):
        region = inst == j
        if not ok[j - 1]:
            continue
        obj = _object_pixels(rng, class_style(c), placed[j - 1][1], placed[j - 1][2], yy, xx)
        img[region] = obj[region]
        kept.append(c)
        out[region] = len(kept)
    # dropped objects leave background behind (img there is still background)
    img += rng.normal(0, 3.0, size=img.shape)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return _Sample(image=image, instances=out, classes=kept)


# ----------------------------------------------------------------------------------------------
# Annotations derived from a sample
# ----------------------------------------------------------------------------------------------
def _class_map(sample: _Sample) -> np.ndarray:
    lut = np.array([0] + sample.classes, dtype=np.uint8)
    return lut[sample.instances]


def _void_band(instances: np.ndarray) -> np.ndarray:
    """Pixels with an 8-neighbour of another instance or background: ~2 px band like VOC's."""
    return ndimage.maximum_filter(instances, size=3, mode="nearest") != \
        ndimage.minimum_filter(instances, size=3, mode="nearest")


def _boxes(sample: _Sample) -> List[Tuple[int, int, int, int, int]]:
    """(class, xmin, ymin, xmax, ymax), 1-based inclusive, from each instance's visible pixels."""
    out = []
    objs = ndimage.find_objects(sample.instances)
    for j, sl in enumerate(objs):
        if sl is None:
            continue
        ys, xs = sl
        out.append((sample.classes[j], xs.start + 1, ys.start + 1, xs.stop, ys.stop))
    return out


def _annotation_xml(image_id: str, shape: Tuple[int, int], boxes, names: Sequence[str]) -> str:
    h, w = shape
    parts = [
        "<annotation>",
        "\t<folder>VOC2012</folder>",
        f"\t<filename>{image_id}.jpg</filename>",
        "\t<source>",
        "\t\t<database>wsss synthetic</database>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{w}</width>",
        f"\t\t<height>{h}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        "\t<segmented>1</segmented>",
    ]
    for c, x0, y0, x1, y1 in boxes:
        truncated = int(x0 == 1 or y0 == 1 or x1 == w or y1 == h)
        parts += [
            "\t<object>",
            f"\t\t<name>{names[c]}</name>",
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{truncated}</truncated>",
            "\t\t<difficult>0</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{x0}</xmin>",
            f"\t\t\t<ymin>{y0}</ymin>",
            f"\t\t\t<xmax>{x1}</xmax>",
            f"\t\t\t<ymax>{y1}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def _pick(rng: np.random.Generator, candidates: np.ndarray) -> Tuple[int, int]:
    ys, xs = np.nonzero(candidates)
    k = int(rng.integers(len(ys)))
    return int(ys[k]), int(xs[k])


def _interior(region: np.ndarray, margin: float) -> Tuple[np.ndarray, np.ndarray]:
    """(pixels at least ``margin`` from the region's edge, or its deepest ones; distance map)."""
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    inner = dist >= margin
    if not inner.any():
        inner = dist >= dist.max()
    return inner, dist


def _stroke(rng: np.random.Generator, inner: np.ndarray, start: Tuple[int, int], length: float) -> np.ndarray:
    """A wiggly 1 px curve through ``start`` kept to the run of samples inside ``inner``."""
    h, w = inner.shape
    t = np.arange(-length, length + 0.5, 0.5)
    theta = rng.uniform(0, np.pi)
    amp = rng.uniform(0, 0.15) * length
    omega, phi = 2 * np.pi / max(length, 1.0) * rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi)
    wig = amp * (np.sin(omega * t + phi) - np.sin(phi))   # zero at t = 0: the curve passes start
    y = np.rint(start[0] + t * np.sin(theta) + wig * np.cos(theta)).astype(int)
    x = np.rint(start[1] + t * np.cos(theta) - wig * np.sin(theta)).astype(int)
    inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    inside[inside] = inner[y[inside], x[inside]]
    i0 = int(np.argmin(np.abs(t)))
    line = np.zeros(inner.shape, dtype=bool)
    line[start] = True
    if not inside[i0]:
        return line
    lo = i0
    while lo > 0 and inside[lo - 1]:
        lo -= 1
    hi = i0
    while hi + 1 < len(t) and inside[hi + 1]:
        hi += 1
    line[y[lo:hi + 1], x[lo:hi + 1]] = True
    return line


def _weak_labels(rng: np.random.Generator, sample: _Sample) -> Tuple[np.ndarray, np.ndarray]:
    """SPML-like scribbles and points: label maps with 255 = unlabelled.

    Strokes are 1 px wide and at least 2 px inside their region, points lie in the deeper half of
    their object: loaders dilate both (SPML: 3x3 scribbles, 6x6 points) without crossing edges."""
    shape = sample.instances.shape
    scribble = np.full(shape, IGNORE_INDEX, dtype=np.uint8)
    points = np.full(shape, IGNORE_INDEX, dtype=np.uint8)
    regions = [(sample.instances == j, c) for j, c in enumerate(sample.classes, start=1)]
    regions_bg = sample.instances == 0
    for region, c in regions:
        inner, dist = _interior(region, 2.0)
        deep = dist >= 0.5 * dist.max()
        points[_pick(rng, deep & inner)] = c
        start = _pick(rng, deep & inner)
        ys, xs = np.nonzero(region)
        length = 0.5 * max(np.ptp(ys), np.ptp(xs), 1)
        line = _stroke(rng, inner, start, length)
        scribble[line & region] = c
    if regions_bg.any():
        inner, _ = _interior(regions_bg, 4.0)
        for _ in range(int(rng.integers(3, 6))):
            points[_pick(rng, inner)] = 0
        length = 0.2 * max(shape)
        for _ in range(int(rng.integers(2, 4))):
            line = _stroke(rng, inner, _pick(rng, inner), length)
            scribble[line & regions_bg] = 0
    return scribble, points


def _superpixels(rng: np.random.Generator, instances: np.ndarray, cell: int = 8) -> np.ndarray:
    """Jittered-grid over-segmentation split along object boundaries, ids 0..K-1 (uint16)."""
    h, w = instances.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    jitter = 0.35 * cell * _smooth_noise(rng, (h, w), 2 * cell, 2)
    gy = np.floor((yy + jitter[0]) / cell).astype(np.int64) + 1
    gx = np.floor((xx + jitter[1]) / cell).astype(np.int64) + 1
    cells = gy * (w // cell + 4) + gx
    leaky = instances.copy()
    for j in range(1, int(instances.max()) + 1):
        if rng.uniform() < 0.1:            # a missed edge: this object merges into its cells
            leaky[leaky == j] = 0
    key = cells * (int(instances.max()) + 1) + leaky
    _, ids = np.unique(key, return_inverse=True)
    return ids.reshape(h, w).astype(np.uint16)


def _saliency(rng: np.random.Generator, instances: np.ndarray) -> np.ndarray:
    n = int(instances.max())
    strength = np.concatenate([[0.0], rng.uniform(0.7, 1.0, n)]).astype(np.float32)
    sal = ndimage.gaussian_filter(strength[instances], sigma=1.5)
    sal += 0.12 * _smooth_noise(rng, instances.shape, 12)[0] + 0.08
    sal += rng.normal(0, 0.03, size=sal.shape)
    return np.clip(np.rint(sal * 255), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Writing the set
# ----------------------------------------------------------------------------------------------
def _params(num_train, num_val, image_size, num_classes, seed) -> Dict:
    return {"generator_version": GENERATOR_VERSION, "num_train": int(num_train), "num_val": int(num_val),
            "image_size": [int(image_size[0]), int(image_size[1])], "num_classes": int(num_classes),
            "seed": int(seed)}


def _image_ids(params: Dict) -> Tuple[List[str], List[str]]:
    n_train, n_val = params["num_train"], params["num_val"]
    ids = [f"{ID_PREFIX}{i:06d}" for i in range(1, n_train + n_val + 1)]
    return ids[:n_train], ids[n_train:]


def _is_complete(root: Path, params: Dict) -> bool:
    try:
        stored = json.loads((root / PARAMS_FILE).read_text())
    except (OSError, ValueError):
        return False
    if stored != params:
        return False
    total = params["num_train"] + params["num_val"]
    try:
        for name in IMAGE_DIRS:
            if len(os.listdir(root / name)) != total:
                return False
        return all((root / p).is_file() for p in (
            "cls_labels.npy", "class_names.txt", "ImageSets/Segmentation/train.txt",
            "ImageSets/Segmentation/val.txt", "ImageSets/Segmentation/train_aug.txt"))
    except OSError:
        return False


def _save_gray(path: Path, array: np.ndarray) -> None:
    """Plain PNG save: uint8 -> 'L', uint16 -> 'I;16'. The whole set is built in a temporary folder
    renamed into place, so per-file atomic writes would only cost time here."""
    Image.fromarray(array).save(path, format="PNG")


def _write_set(out: Path, params: Dict) -> None:
    h, w = params["image_size"]
    num_classes = params["num_classes"]
    names = SYNTHETIC_CLASSES[:num_classes]
    train_ids, val_ids = _image_ids(params)
    for name in IMAGE_DIRS:
        (out / name).mkdir(parents=True)
    cls_labels: Dict[str, np.ndarray] = {}
    for index, image_id in enumerate(train_ids + val_ids):
        rng = np.random.default_rng([params["seed"], index])
        sample = _render(rng, (h, w), num_classes - 1)
        Image.fromarray(sample.image, "RGB").save(out / "JPEGImages" / f"{image_id}.jpg", quality=95)
        cls_map = _class_map(sample)
        band = _void_band(sample.instances)
        write_label_png(out / "SegmentationClass" / f"{image_id}.png",
                        np.where(band, IGNORE_INDEX, cls_map))
        write_label_png(out / "SegmentationObject" / f"{image_id}.png",
                        np.where(band, IGNORE_INDEX, sample.instances).astype(np.uint8))
        _save_gray(out / "SegmentationClassAug" / f"{image_id}.png", cls_map)
        (out / "Annotations" / f"{image_id}.xml").write_text(
            _annotation_xml(image_id, (h, w), _boxes(sample), names))
        scribble, points = _weak_labels(rng, sample)
        _save_gray(out / "scribble" / f"{image_id}.png", scribble)
        _save_gray(out / "points" / f"{image_id}.png", points)
        _save_gray(out / "hed" / f"{image_id}.png", _superpixels(rng, sample.instances))
        _save_gray(out / "saliency" / f"{image_id}.png", _saliency(rng, sample.instances))
        vec = np.zeros(num_classes - 1, dtype=np.float32)
        vec[np.asarray(sorted(set(sample.classes))) - 1] = 1.0
        cls_labels[image_id] = vec
    seg = out / "ImageSets" / "Segmentation"
    write_split_list(seg / "train.txt", train_ids)
    write_split_list(seg / "val.txt", val_ids)
    write_split_list(seg / "train_aug.txt", train_ids)
    save_cls_labels_npy(out / "cls_labels.npy", cls_labels)
    (out / "class_names.txt").write_text("\n".join(names) + "\n")
    (out / PARAMS_FILE).write_text(json.dumps(params, indent=1) + "\n")   # last: marks completion


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    lock_path = root.parent / f".{root.name}.lock"
    with open(lock_path, "a+") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _check_replaceable(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise SyntheticDataError(f"{root}: exists and is not a directory; point the synthetic data "
                                 "set's root at a new or empty folder")
    if root.is_dir() and any(root.iterdir()) and not (root / PARAMS_FILE).is_file():
        raise SyntheticDataError(
            f"{root}: folder is not empty and holds no {PARAMS_FILE}, so it is not a synthetic set and "
            "will not be overwritten; point the synthetic data set's root at a new or empty folder")


def _validate(num_train, num_val, image_size, num_classes, seed) -> None:
    if int(num_train) < 1 or int(num_val) < 1:
        raise ValueError(f"num_train and num_val must be >= 1, got {num_train}, {num_val}")
    if len(image_size) != 2 or min(int(s) for s in image_size) < 32:
        raise ValueError(f"image_size must be (H, W) with both >= 32, got {tuple(image_size)}")
    if not 2 <= int(num_classes) <= len(SYNTHETIC_CLASSES):
        raise ValueError(f"num_classes (background included) must be in 2..{len(SYNTHETIC_CLASSES)}, "
                         f"got {num_classes}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def ensure_synthetic_voc(root, *, num_train: int = 200, num_val: int = 51,
                         image_size: Tuple[int, int] = (96, 128), num_classes: int = 6,
                         seed: int = 0, force: bool = False) -> Path:
    """Make sure ``root`` holds the synthetic VOC-format set for these parameters; return ``root``.

    Nothing is written when a complete set with the same parameters is already there (unless
    ``force``). Same parameters give byte-identical files. ``num_classes`` counts the background.
    """
    _validate(num_train, num_val, image_size, num_classes, seed)
    params = _params(num_train, num_val, image_size, num_classes, seed)
    root = Path(root).expanduser().resolve()
    if not force and _is_complete(root, params):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        if not force and _is_complete(root, params):   # another process made it while we waited
            return root
        _check_replaceable(root)
        for stale in root.parent.glob(f".{root.name}.tmp-*"):   # left by killed runs (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        try:
            os.chmod(tmp, 0o755)
            _write_set(tmp, params)
            if root.exists():
                old = root.parent / f".{root.name}.tmp-old-{uuid.uuid4().hex}"
                os.replace(root, old)
                os.replace(tmp, root)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return root


def prepare_synthetic(root, synthetic: Dict | None, home=None) -> Path | None:
    """Write the synthetic set a dataset config asks for, where it is allowed to; returns the root or None.

    ``home`` is the embedded default location (``conf/dataset/synthetic.yaml``: ``${paths.data_dir}/synthetic``):
    with it set, a ``dataset.root`` elsewhere is generated only if it already holds a synthetic set, so a typo
    in ``dataset.root`` is an error instead of a new data set at the typo. ``home=None`` (an explicit
    ``dataset.synthetic={...}`` on another dataset config) generates at ``root``.
    """
    if not synthetic:
        return None
    target = Path(root).expanduser().resolve()
    if home is not None and target != Path(home).expanduser().resolve() and not (target / PARAMS_FILE).is_file():
        raise FileNotFoundError(
            f"dataset.root={root} holds no data set. The synthetic set is generated only at its default location "
            f"{Path(home).expanduser()} (paths.data_dir or WSSS_DATA_DIR move it); for real data pass dataset=voc "
            "dataset.root=/path/VOC2012, or dataset.synthetic_home=null to generate a synthetic set at this root")
    params = {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(synthetic).items()}
    probe = _params(**{k: params.get(k, d) for k, d in (("num_train", 200), ("num_val", 51),
                                                        ("image_size", (96, 128)), ("num_classes", 6),
                                                        ("seed", 0))})
    if not _is_complete(target, probe):
        log.info("writing the synthetic data set (%s train / %s val images) to %s", probe["num_train"],
                 probe["num_val"], target)
    return ensure_synthetic_voc(target, **params)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic VOC-format data set.")
    parser.add_argument("root")
    parser.add_argument("--num-train", type=int, default=200)
    parser.add_argument("--num-val", type=int, default=51)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--num-classes", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true")
    a = parser.parse_args(argv)
    path = ensure_synthetic_voc(a.root, num_train=a.num_train, num_val=a.num_val,
                                image_size=(a.height, a.width), num_classes=a.num_classes,
                                seed=a.seed, force=a.force)
    print(path)


if __name__ == "__main__":
    main()
