"""A tiny MS COCO 2014 in the official layout, with the label maps it must give, for testing what users run.

Why: ``scripts/prepare_coco.py`` and ``dataset=coco`` must work from the official files. This writes
``annotations/instances_{train,val}2014.json``, ``train2014/`` and ``val2014/`` with every case the rules
name: polygons (one and several parts), compressed and uncompressed RLE, crowd regions, a small object listed
before the large one it overlaps, category ids with gaps (the 80 real ones, listed out of order; objects of ids 1, 3 and 90), an image without
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

#: the 80 categories of instances_*2014.json (id, name); ids have gaps (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
COCO_CATEGORIES = [
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"), (14, "parking meter"),
    (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"),
    (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"), (28, "umbrella"),
    (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"),
    (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"),
    (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"), (48, "fork"),
    (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"),
    (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"),
    (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"), (72, "tv"),
    (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"), (78, "microwave"),
    (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"),
    (87, "scissors"), (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush")]
#: the json lists them out of id order on purpose (reversed); class index = rank of the id
CATEGORIES = [{"id": i, "name": n, "supercategory": "thing"} for i, n in reversed(COCO_CATEGORIES)]
CLASS_NAMES = ["background"] + [n for _, n in COCO_CATEGORIES]
CLASS_OF = {cid: k + 1 for k, (cid, _) in enumerate(COCO_CATEGORIES)}  # 1 -> 1, 3 -> 3, 90 -> 80
NUM_FG = len(COCO_CATEGORIES)


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


def labels_of(label: np.ndarray, num_fg: int = NUM_FG) -> np.ndarray:
    """The image-level label a mask implies (crowd excluded)."""
    vec = np.zeros(num_fg, np.float32)
    for v in np.unique(label):
        if 0 < v < 255:
            vec[v - 1] = 1.0
    return vec
