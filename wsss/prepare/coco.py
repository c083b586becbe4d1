"""MS COCO 2014 from the official files to the label PNGs, lists and image labels wsss trains on.

    python scripts/prepare_coco.py --coco /path/COCO2014 --out /path/coco_wsss [--workers N]

Input (the official archives unpacked): ``annotations/instances_{train,val}2014.json``, ``train2014/``,
``val2014/``. Output under ``--out`` (``dataset=coco dataset.root=OUT``):

- ``SegmentationClass/{train2014,val2014}/<image file stem>.png``: single-channel ('L') uint8 label maps.
  0 = background, 1..80 = the categories in ascending category id order (1 -> 1, 3 -> 3, 13 -> 12, ...,
  90 -> 80; the ids of the json's own category list, so a json with ids 1, 3 and 90 gives 1, 2 and 3).
  Every instance is rasterised with ``pycocotools.mask`` (polygons and RLE alike, as ``COCO.annToMask``).
  Instances are painted in order of decreasing area (pixels of the rasterised mask; ties: lower annotation id
  first), so a smaller object stays on top of a larger one it overlaps. Crowd regions (``iscrowd=1``) are
  painted 255 (ignored by training and evaluation) after all instances. An image without annotations gets an
  all-zero mask.
- ``ImageSets/{train,val}.txt``: the images with at least one non-crowd annotation (the AFA/ToCo convention:
  82,081 / 40,137 on the real data); ``ImageSets/{train,val}_all.txt``: every image (the IRN convention).
- ``cls_labels.npy``: SEAM's format, a pickled dict image stem -> float32 multi-hot over the 80 categories,
  from the non-crowd annotations only (an image with none gets zeros); ``class_names.txt``: ``background``
  and the json's category names, one a line.
- ``images/{train2014,val2014}``: symlinks to the original folders (nothing is copied).

Masks are rendered in worker processes with a progress bar; every file is written atomically (temp file +
rename) and a rerun skips the masks already written, so a killed run resumes. Before anything is written, every
annotation is checked (known category and image, a well-formed segmentation: non-empty polygons of at least
three points, an RLE whose size is its image's); a bad one stops the run with the file and annotation id. An
image named in the json but missing on disk is skipped (left out of every list) and listed at the end, and the
exit status is then non-zero.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from wsss.data.formats import IGNORE_INDEX, save_cls_labels_npy, write_label_png, write_split_list, atomic_write_bytes
from wsss.prepare.common import PrepareError, atomic_symlink, format_summary, map_files

log = logging.getLogger("wsss.prepare.coco")
SPLITS = ("train", "val")
ARCHIVES = {"annotations": "annotations_trainval2014.zip", "train": "train2014.zip", "val": "val2014.zip"}
MASKS, LISTS, IMAGES = "SegmentationClass", "ImageSets", "images"


@dataclass
class ImageTask:
    """One image's mask job: what a worker needs and nothing more (it is pickled to the worker)."""

    stem: str
    image: str
    out: str
    height: int
    width: int
    #: (class index 1..K, iscrowd, segmentation, annotation id)
    anns: List[Tuple[int, int, object, int]] = field(default_factory=list)


def split_folder(split: str) -> str:
    return f"{split}2014"


def annotation_file(coco: Path, split: str) -> Path:
    return coco / "annotations" / f"instances_{split_folder(split)}.json"


def check_inputs(coco: Path, splits: Sequence[str]) -> None:
    """Every json and image folder at once, each with the official archive it comes from."""
    if not coco.is_dir():
        raise PrepareError(f"--coco {coco} is not a folder; pass the folder holding annotations/, train2014/, "
                           "val2014/ (the official COCO 2014 archives unpacked)")
    missing = []
    for split in splits:
        if not annotation_file(coco, split).is_file():
            missing.append(f"{annotation_file(coco, split)} (from {ARCHIVES['annotations']})")
        if not (coco / split_folder(split)).is_dir():
            missing.append(f"{coco / split_folder(split)}/ (from {ARCHIVES[split]})")
    if missing:
        raise PrepareError("COCO 2014 input incomplete, missing:\n  " + "\n  ".join(missing)
                           + "\nunpack the official archives from https://cocodataset.org/#download into --coco")


def load_instances(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PrepareError(f"{path}: not a readable json ({exc}); re-extract {ARCHIVES['annotations']}") from exc
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise PrepareError(f"{path}: no '{key}' list; is this an instances_*.json file?")
    return data


def category_table(categories: list, path: Path) -> Tuple[Dict[int, int], List[str]]:
    """Category id -> class index 1..K in ascending id order, and the K names in that order."""
    cats = sorted(categories, key=lambda c: int(c["id"]))
    ids = [int(c["id"]) for c in cats]
    if len(set(ids)) != len(ids):
        raise PrepareError(f"{path}: category ids repeat in 'categories' ({ids})")
    return {cid: i + 1 for i, cid in enumerate(ids)}, [str(c["name"]) for c in cats]


def segmentation_problem(segm, height: int, width: int) -> str | None:
    """Why ``segm`` cannot be rasterised on a ``height`` x ``width`` image (None when it can)."""
    if isinstance(segm, list):
        if not segm:
            return "empty polygon list"
        for poly in segm:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                n = len(poly) if isinstance(poly, list) else type(poly).__name__
                return f"polygon with {n} coordinates (needs an even number, at least 6)"
        return None
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if counts is None or size is None:
            return "RLE without 'size' or 'counts'"
        if list(size) != [height, width]:
            return f"RLE of size {list(size)} on an image of {[height, width]}"
        return None
    return f"segmentation of type {type(segm).__name__}"


def build_tasks(data: dict, path: Path, cats: Dict[int, int], image_dir: Path, mask_dir: Path) -> List[ImageTask]:
    """One task per image, every annotation checked first (all problems at once)."""
    tasks: Dict[int, ImageTask] = {}
    for img in data["images"]:
        stem = Path(img["file_name"]).stem
        tasks[int(img["id"])] = ImageTask(stem, str(image_dir / img["file_name"]), str(mask_dir / f"{stem}.png"),
                                          int(img["height"]), int(img["width"]))
    problems = []
    for ann in data["annotations"]:
        aid, task = ann.get("id"), tasks.get(int(ann.get("image_id", -1)))
        cid = ann.get("category_id")
        if task is None:
            problems.append(f"annotation {aid}: image_id {ann.get('image_id')} is not in 'images'")
            continue
        if cid not in cats:
            problems.append(f"annotation {aid}: category_id {cid} is not in the json's category list "
                            f"({sorted(cats)[:8]}{' ...' if len(cats) > 8 else ''})")
            continue
        why = segmentation_problem(ann.get("segmentation"), task.height, task.width)
        if why is not None:
            problems.append(f"annotation {aid} (image {task.stem}): malformed segmentation, {why}")
            continue
        task.anns.append((cats[cid], int(bool(ann.get("iscrowd", 0))), ann["segmentation"], int(aid)))
    if problems:
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise PrepareError(f"{path}: {len(problems)} unusable annotations (nothing was written):\n  "
                           + "\n  ".join(problems[:10]) + more)
    return [tasks[k] for k in sorted(tasks, key=lambda k: tasks[k].stem)]


def rasterise(segm, height: int, width: int) -> np.ndarray:
    """HxW uint8 0/1 mask of one segmentation, as ``pycocotools.coco.COCO.annToMask`` makes it."""
    from pycocotools import mask as mask_utils

    if isinstance(segm, list):  # polygons: one RLE per part, merged
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    elif isinstance(segm["counts"], list):  # uncompressed RLE (crowd regions)
        rle = mask_utils.frPyObjects(segm, height, width)
    else:
        rle = segm
    return mask_utils.decode(rle)


def render_label(task: ImageTask) -> np.ndarray:
    """The label map of one image: instances by decreasing area, then crowd regions as 255."""
    label = np.zeros((task.height, task.width), np.uint8)
    things, crowds = [], []
    for cls, crowd, segm, aid in task.anns:
        m = rasterise(segm, task.height, task.width).astype(bool)
        (crowds if crowd else things).append((-int(m.sum()), aid, cls, m))
    for _, _, cls, m in sorted(things, key=lambda t: (t[0], t[1])):
        label[m] = cls
    for _, _, _, m in crowds:
        label[m] = IGNORE_INDEX
    return label


def write_mask(task: ImageTask) -> str:
    """Render and write one mask; ``kept`` when a previous run wrote it, ``missing`` without its image."""
    if os.path.isfile(task.out):
        return "kept"
    if not os.path.isfile(task.image):
        return "missing"
    from PIL import Image

    with Image.open(task.image) as img:
        if img.size != (task.width, task.height):
            raise PrepareError(f"{task.image} is {img.size[1]}x{img.size[0]} but its json entry says "
                               f"{task.height}x{task.width}; re-extract the image archive")
    write_label_png(task.out, render_label(task), palette=False)
    return "written"


def image_labels(task: ImageTask, num_fg: int) -> np.ndarray:
    vec = np.zeros(num_fg, np.float32)
    for cls, crowd, _, _ in task.anns:
        if not crowd:
            vec[cls - 1] = 1.0
    return vec


def prepare(coco: Path, out: Path, workers: int = 1, splits: Sequence[str] = SPLITS,
            progress: bool = True) -> dict:
    """Write everything (see the module docstring); returns the counts and the missing images."""
    coco, out = Path(coco).expanduser().absolute(), Path(out).expanduser().absolute()
    check_inputs(coco, splits)
    per_split, names = {}, None
    for split in splits:  # every json checked before the first file is written
        path = annotation_file(coco, split)
        data = load_instances(path)
        cats, split_names = category_table(data["categories"], path)
        if names is not None and split_names != names:
            raise PrepareError(f"{path}: its category list differs from {annotation_file(coco, splits[0])}'s; "
                               "both must come from the same COCO release")
        names = split_names
        per_split[split] = build_tasks(data, path, cats, coco / split_folder(split),
                                       out / MASKS / split_folder(split))
        del data
    summary, labels, missing = {}, {}, []
    for split in splits:
        tasks = per_split[split]
        atomic_symlink(out / IMAGES / split_folder(split), coco / split_folder(split))
        (out / MASKS / split_folder(split)).mkdir(parents=True, exist_ok=True)
        status = map_files(write_mask, tasks, workers, progress, f"masks {split_folder(split)}")
        present = [t for t, s in zip(tasks, status) if s != "missing"]
        missing += [t.image for t, s in zip(tasks, status) if s == "missing"]
        annotated = [t for t in present if any(not crowd for _, crowd, _, _ in t.anns)]
        write_split_list(out / LISTS / f"{split}.txt", [t.stem for t in annotated])
        write_split_list(out / LISTS / f"{split}_all.txt", [t.stem for t in present])
        labels.update({t.stem: image_labels(t, len(names)) for t in present})
        summary[split_folder(split)] = {
            "images": len(tasks), "annotated": len(annotated), "with_crowd": sum(
                any(crowd for _, crowd, _, _ in t.anns) for t in present),
            "written": status.count("written"), "kept": status.count("kept"), "missing": status.count("missing")}
    save_cls_labels_npy(out / "cls_labels.npy", labels)
    atomic_write_bytes(out / "class_names.txt", ("\n".join(["background"] + names) + "\n").encode())
    return {"summary": summary, "missing": missing, "num_classes": len(names) + 1, "out": str(out)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco", required=True, type=Path,
                        help="folder with annotations/instances_{train,val}2014.json, train2014/, val2014/")
    parser.add_argument("--out", required=True, type=Path, help="output root (dataset.root for dataset=coco)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="mask-writing processes")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = prepare(args.coco, args.out, args.workers, args.splits, not args.no_progress)
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(f"COCO 2014 -> {result['out']} ({result['num_classes']} classes with background)",
                         result["summary"]))
    if result["missing"]:
        shown = "\n  ".join(result["missing"][:20])
        more = f"\n  ... and {len(result['missing']) - 20} more" if len(result["missing"]) > 20 else ""
        print(f"skipped {len(result['missing'])} images named in the json but missing on disk (left out of every "
              f"list):\n  {shown}{more}\nre-extract the image archives and rerun (finished masks are kept)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # python -m wsss.prepare.coco (an installed wsss has no scripts/ folder)
    sys.exit(main())
