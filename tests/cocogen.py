"""A tiny MS COCO 2014 in the official layout, with the label maps it must give, for testing what users run.

Why: ``scripts/prepare_coco.py`` and ``dataset=coco`` must work from the official files. This writes
``annotations/instances_{train,val}2014.json``, ``train2014/`` and ``val2014/`` with every case the rules
name: polygons (one and several parts), compressed and uncompressed RLE, crowd regions, a small object listed
before the large one it overlaps, category ids with gaps (1, 3, 90, listed out of order), an image without
annotations and one with only a crowd region. The expected label maps are rasterised here independently of
pycocotools (pixel-centre point-in-polygon tests, hand-decoded run lengths) and painted in the order the
rules say, written out by hand per image.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import numpy as np
from matplotlib.path import Path as MplPath
from PIL import Image

#: out of id order on purpose; class index = rank of the id: 1 -> 1, 3 -> 2, 90 -> 3
CATEGORIES = [{"id": 90, "name": "toothbrush", "supercategory": "indoor"},
              {"id": 1, "name": "person", "supercategory": "person"},
              {"id": 3, "name": "car", "supercategory": "vehicle"}]
CLASS_NAMES = ["background", "person", "car", "toothbrush"]
CLASS_OF = {1: 1, 3: 2, 90: 3}


def polygon_mask(poly: List[float], h: int, w: int) -> np.ndarray:
    """Pixels whose centre lies inside the polygon (COCO's pixel (x, y) covers [x, x+1) x [y, y+1))."""
    yy, xx = np.mgrid[:h, :w]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1)
    return MplPath(np.asarray(poly, float).reshape(-1, 2)).contains_points(centres).reshape(h, w)


def runs_of(mask: np.ndarray) -> List[int]:
    """Uncompressed COCO RLE counts: column-major runs, starting with zeros."""
    flat = mask.astype(np.uint8).ravel(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return counts


def ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy + 0.5 - cy) / ry) ** 2 + ((xx + 0.5 - cx) / rx) ** 2 < 1


def compressed_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle["counts"].decode("ascii")}


def _image(rng, h: int, w: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def write_tiny_coco(root: str | Path, seed: int = 0, size: tuple = (40, 48)) -> Dict[str, Dict[str, np.ndarray]]:
    """Write the set under ``root``; returns split folder -> image stem -> expected label map."""
    root, rng = Path(root), np.random.default_rng(seed)
    h, w = size
    expected: Dict[str, Dict[str, np.ndarray]] = {}
    ann_id = 100
    for split, offset in (("train2014", 0), ("val2014", 1000)):
        images, anns, truth = [], [], {}

        def add_image(n: int) -> tuple:
            stem = f"COCO_{split}_{offset + n:012d}"
            images.append({"id": offset + n, "file_name": f"{stem}.jpg", "height": h, "width": w})
            return offset + n, stem

        def add_ann(image_id: int, cat: int, segm, crowd: int = 0, aid: int | None = None) -> None:
            nonlocal ann_id
            ann_id += 1
            anns.append({"id": aid if aid is not None else ann_id, "image_id": image_id, "category_id": cat,
                         "segmentation": segm, "iscrowd": crowd, "area": 0.0, "bbox": [0, 0, 1, 1]})

        # 1: a small triangle (toothbrush, listed first, lower id) on a large rectangle (person); a crowd strip
        # (uncompressed RLE) over both, painted last
        iid, stem = add_image(1)
        big = [4, 4, 40, 4, 40, 34, 4, 34]
        tri = [12, 6.5, 30, 24.5, 12, 24.5]  # edges clear of pixel centres: both rasterisers agree
        strip = np.zeros((h, w), bool)
        strip[30:38, 20:46] = True
        add_ann(iid, 90, [tri], aid=7)
        add_ann(iid, 1, [big], aid=500)
        add_ann(iid, 1, {"size": [h, w], "counts": runs_of(strip)}, crowd=1)
        label = np.zeros((h, w), np.uint8)
        label[polygon_mask(big, h, w)] = CLASS_OF[1]
        label[polygon_mask(tri, h, w)] = CLASS_OF[90]
        label[strip] = 255
        truth[stem] = label
        # 2: a compressed-RLE ellipse (car) beside a two-part polygon (person); they do not overlap
        iid, stem = add_image(2)
        oval = ellipse(h, w, 20, 33, 9, 11)
        parts = [[2, 3, 12, 3, 12, 16, 2, 16], [4, 20, 16, 20, 4, 37.5]]
        add_ann(iid, 3, compressed_rle(oval))
        add_ann(iid, 1, parts)
        label = np.zeros((h, w), np.uint8)
        label[oval] = CLASS_OF[3]
        for part in parts:
            label[polygon_mask(part, h, w)] = CLASS_OF[1]
        truth[stem] = label
        # 3: no annotations at all
        iid, stem = add_image(3)
        truth[stem] = np.zeros((h, w), np.uint8)
        # 4: only a crowd region (in *_all.txt, not in the annotated list)
        iid, stem = add_image(4)
        blob = ellipse(h, w, 20, 24, 8, 8)
        add_ann(iid, 3, {"size": [h, w], "counts": runs_of(blob)}, crowd=1)
        label = np.zeros((h, w), np.uint8)
        label[blob] = 255
        truth[stem] = label
        # 5: a car partly covering a person of the same size order: the smaller (car) stays on top
        iid, stem = add_image(5)
        person = [2, 2, 30, 2, 30, 38, 2, 38]
        car = [16, 10, 46, 10, 46, 30, 16, 30]
        add_ann(iid, 3, [car])
        add_ann(iid, 1, [person])
        label = np.zeros((h, w), np.uint8)
        label[polygon_mask(person, h, w)] = CLASS_OF[1]
        label[polygon_mask(car, h, w)] = CLASS_OF[3]
        truth[stem] = label

        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for img in images:
            _image(rng, h, w).save(folder / img["file_name"], quality=95)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"info": {}, "licenses": [], "images": images, "annotations": anns, "categories": CATEGORIES}))
        expected[split] = truth
    return expected


def labels_of(label: np.ndarray, num_fg: int = 3) -> np.ndarray:
    """The image-level label a mask implies (crowd excluded)."""
    vec = np.zeros(num_fg, np.float32)
    for v in np.unique(label):
        if 0 < v < 255:
            vec[v - 1] = 1.0
    return vec
