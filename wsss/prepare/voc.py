"""PASCAL VOC 2012 + SBD from the official archives to ``SegmentationClassAug``, ``train_aug.txt`` and ``cls_labels.npy``.

    python scripts/prepare_voc.py --voc /path/VOCdevkit/VOC2012 --sbd /path/benchmark_RELEASE [--workers N] [--strict]

Inputs: the VOC 2012 devkit (``VOCtrainval_11-May-2012.tar``: ``JPEGImages/``, ``SegmentationClass/``,
``Annotations/``, ``ImageSets/Segmentation/{train,val}.txt``) and SBD (``benchmark.tgz``: ``dataset/cls/ID.mat``,
``dataset/{train,val}.txt``). Written into the VOC folder (``dataset=voc dataset.root=VOC2012``):

- ``SegmentationClassAug/ID.png``: grayscale ('L') class ids 0..20, 255 = ignore. SBD's ``GTcls.Segmentation``
  for its ids; VOC's own ``SegmentationClass`` palette PNGs (palette index = class id) for VOC's ids; an id with
  both takes VOC's mask (finer, with its 255 boundary band).
- ``ImageSets/Segmentation/train_aug.txt``: SBD train + SBD val + VOC train, minus VOC val (10,582 ids), sorted.
- ``cls_labels.npy`` (SEAM format, 20-d multi-hot by id) over train_aug and val: the classes named in
  ``Annotations/ID.xml`` as psa/SEAM do (jiwoon-ahn/psa ``tool/make_cls_labels.py`` with
  ``voc12/data.py: load_image_label_from_xml``); an id without XML gets the classes of its mask.

Checks: what is missing is listed with the archive it comes from before anything is written; the counts
(VOC train 1,464, val 1,449, train_aug 10,582) are compared (a mismatch is a warning, ``--strict`` makes it an
error); every written mask must hold only 0..20 and 255 (else an error naming the file). Masks are written in
worker processes with a progress bar, atomically; a rerun keeps the masks already written.
"""
from __future__ import annotations

import argparse
import os
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from wsss.data.formats import (IGNORE_INDEX, VOC_CLASSES, read_split_list, save_cls_labels_npy, write_label_png,
                               write_split_list)
from wsss.prepare.common import PrepareError, map_files

#: the published sizes (VOC 2012 devkit lists; SBD-augmented train_aug of Hariharan et al. as used since psa)
EXPECTED = {"train": 1464, "val": 1449, "train_aug": 10582}
NUM_CLASSES = 21
ARCHIVES = {"voc": "VOCtrainval_11-May-2012.tar", "sbd": "benchmark.tgz (SBD, benchmark_RELEASE/)"}


@dataclass
class MaskTask:
    image_id: str
    source: str  # "voc" (palette PNG) or "sbd" (.mat)
    path: str
    out: str


def check_inputs(voc: Path, sbd: Path) -> None:
    """Everything the script reads, all missing pieces at once with their archive."""
    need = [(voc / "JPEGImages", "voc", True), (voc / "SegmentationClass", "voc", True),
            (voc / "ImageSets/Segmentation/train.txt", "voc", False),
            (voc / "ImageSets/Segmentation/val.txt", "voc", False),
            (sbd / "dataset/cls", "sbd", True), (sbd / "dataset/train.txt", "sbd", False),
            (sbd / "dataset/val.txt", "sbd", False)]
    missing = [f"{p}{'/' if folder else ''} (from {ARCHIVES[src]})" for p, src, folder in need
               if not (p.is_dir() if folder else p.is_file())]
    if missing:
        raise PrepareError("VOC + SBD input incomplete, missing:\n  " + "\n  ".join(missing)
                           + "\n--voc is the VOCdevkit/VOC2012 folder, --sbd the benchmark_RELEASE folder")


def read_sbd(path: str) -> np.ndarray:
    """``GTcls.Segmentation`` of one SBD ``.mat`` as uint8."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
        seg = mat["GTcls"].Segmentation
    except Exception as exc:  # scipy raises several types for broken files
        raise PrepareError(f"{path}: not an SBD cls .mat with GTcls.Segmentation ({exc}); re-extract "
                           f"{ARCHIVES['sbd']}") from exc
    return np.asarray(seg).astype(np.uint8)


def read_voc_palette(path: str) -> np.ndarray:
    """A VOC ``SegmentationClass`` PNG as class ids (its palette indices; colour PNGs are refused)."""
    from PIL import Image

    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise PrepareError(f"{path}: mode {img.mode!r}, expected VOC's palette PNG; re-extract {ARCHIVES['voc']}")
        return np.asarray(img, dtype=np.uint8)


def write_mask(task: MaskTask) -> Tuple[str, List[int]]:
    """``(status, class ids present)``; a value outside 0..20 / 255 is an error naming the file."""
    if os.path.isfile(task.out):
        from PIL import Image

        with Image.open(task.out) as img:
            label, status = np.asarray(img, dtype=np.uint8), "kept"
    else:
        label = read_sbd(task.path) if task.source == "sbd" else read_voc_palette(task.path)
        status = "written"
    values = np.unique(label).tolist()
    bad = [v for v in values if v >= NUM_CLASSES and v != IGNORE_INDEX]
    if bad:
        raise PrepareError(f"{task.path if status == 'written' else task.out}: values {bad[:8]} outside 0..20 and "
                           "255; not a VOC/SBD class mask")
    if status == "written":
        write_label_png(task.out, label, palette=False)
    return status, [v for v in values if 0 < v < NUM_CLASSES]


def xml_labels(path: Path) -> np.ndarray | None:
    """Multi-hot of the class names in an ``Annotations`` XML (every ``name`` element that is a VOC class)."""
    if not path.is_file():
        return None
    index = {n: i for i, n in enumerate(VOC_CLASSES[1:])}
    vec = np.zeros(NUM_CLASSES - 1, np.float32)
    for el in ET.parse(path).getroot().iter("name"):
        if (el.text or "").strip() in index:
            vec[index[el.text.strip()]] = 1.0
    return vec


def count_check(counts: Dict[str, int], strict: bool) -> List[str]:
    """Messages for counts that differ from the published ones (an error with ``strict``)."""
    notes = [f"{name}: {counts[name]} ids, the official release has {want:,}" for name, want in EXPECTED.items()
             if counts[name] != want]
    if notes and strict:
        raise PrepareError("counts differ from the official VOC 2012 + SBD (--strict):\n  " + "\n  ".join(notes))
    return notes


def prepare(voc: Path, sbd: Path, workers: int = 1, strict: bool = False, progress: bool = True) -> dict:
    voc, sbd = Path(voc).expanduser().absolute(), Path(sbd).expanduser().absolute()
    check_inputs(voc, sbd)
    lists = voc / "ImageSets" / "Segmentation"
    voc_train, voc_val = read_split_list(lists / "train.txt"), read_split_list(lists / "val.txt")
    sbd_ids = sorted(set(read_split_list(sbd / "dataset/train.txt")) | set(read_split_list(sbd / "dataset/val.txt")))
    train_aug = sorted((set(sbd_ids) | set(voc_train)) - set(voc_val))
    notes = count_check({"train": len(voc_train), "val": len(voc_val), "train_aug": len(train_aug)}, strict)
    own = set(voc_train) | set(voc_val)
    missing = [str(voc / "SegmentationClass" / f"{i}.png") for i in sorted(own)
               if not (voc / "SegmentationClass" / f"{i}.png").is_file()]
    missing += [str(sbd / "dataset/cls" / f"{i}.mat") for i in sbd_ids
                if i not in own and not (sbd / "dataset/cls" / f"{i}.mat").is_file()]
    missing += [str(voc / "JPEGImages" / f"{i}.jpg") for i in train_aug + voc_val
                if not (voc / "JPEGImages" / f"{i}.jpg").is_file()]
    if missing:
        more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise PrepareError(f"{len(missing)} files named in the split lists are missing (nothing was written):\n  "
                           + "\n  ".join(missing[:10]) + more)
    out_dir = voc / "SegmentationClassAug"
    tasks = [MaskTask(i, "voc", str(voc / "SegmentationClass" / f"{i}.png"), str(out_dir / f"{i}.png"))
             if i in own else MaskTask(i, "sbd", str(sbd / "dataset/cls" / f"{i}.mat"), str(out_dir / f"{i}.png"))
             for i in sorted(set(train_aug) | set(voc_val))]
    out_dir.mkdir(parents=True, exist_ok=True)
    results = map_files(write_mask, tasks, workers, progress, "SegmentationClassAug")
    labels, from_xml = {}, 0
    for task, (_, present) in zip(tasks, results):
        vec = xml_labels(voc / "Annotations" / f"{task.image_id}.xml")
        if vec is None:
            vec = np.zeros(NUM_CLASSES - 1, np.float32)
            vec[[c - 1 for c in present]] = 1.0
        else:
            from_xml += 1
        labels[task.image_id] = vec
    write_split_list(lists / "train_aug.txt", train_aug)
    save_cls_labels_npy(voc / "cls_labels.npy", labels)
    status = [s for s, _ in results]
    summary = {"masks": len(tasks), "from_voc": sum(t.source == "voc" for t in tasks),
               "from_sbd": sum(t.source == "sbd" for t in tasks), "written": status.count("written"),
               "kept": status.count("kept"), "labels_from_xml": from_xml, "train": len(voc_train),
               "val": len(voc_val), "train_aug": len(train_aug)}
    return {"summary": summary, "notes": notes}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", required=True, type=Path, help="VOCdevkit/VOC2012 (outputs are written here)")
    parser.add_argument("--sbd", required=True, type=Path, help="SBD's benchmark_RELEASE folder")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--strict", action="store_true", help="counts other than the official ones are an error")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        res = prepare(args.voc, args.sbd, args.workers, args.strict, not args.no_progress)
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = res["summary"]
    print(f"VOC 2012 + SBD -> {Path(args.voc).expanduser().absolute()}\n"
          f"SegmentationClassAug: {m['masks']} masks ({m['from_voc']} from VOC, {m['from_sbd']} from SBD; "
          f"{m['written']} written, {m['kept']} kept from an earlier run)\n"
          f"ImageSets/Segmentation: train {m['train']}, val {m['val']}, train_aug {m['train_aug']} (written)\n"
          f"cls_labels.npy: {m['masks']} ids ({m['labels_from_xml']} from Annotations XML, the rest from masks)")
    for note in res["notes"]:
        print(f"warning: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # python -m wsss.prepare.voc (an installed wsss has no scripts/ folder)
    sys.exit(main())
