"""Checks every label map a run will read, before the first training step.

Why: a mask in the wrong mode or with an unknown class id used to stop a run only when validation
reached it, hours in, with a checkpoint left behind. :func:`scan_label_maps` reads each mask once in
a thread pool (PNG decoding releases the GIL), checks its mode, ids and size against its image, and
returns the classes present in it, which also serve as image-level labels when a root has no
``cls_labels`` file. Results are cached by file size and mtime (``$WSSS_CACHE_DIR``, default
``~/.cache/wsss``), so a second run over VOC val's 1,449 masks reads nothing.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .formats import IGNORE_INDEX, DataFormatError, atomic_write_bytes

log = logging.getLogger(__name__)
CACHE_VERSION = 1
LABEL_MODES = ("P", "L")


def cache_dir() -> Path:
    return Path(os.environ.get("WSSS_CACHE_DIR") or Path.home() / ".cache" / "wsss").expanduser()


def _stamp(path: Path) -> Tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def check_one(image_path: str, mask_path: str, num_classes: int) -> Tuple[Optional[List[int]], Optional[str]]:
    """``(present class ids, None)`` for a good mask, ``(None, problem)`` for a bad one."""
    mask, image = Path(mask_path), Path(image_path)
    if not mask.is_file():
        return None, f"{mask}: missing (the label map of {image.name})"
    try:
        with Image.open(image) as img:
            image_size = img.size
    except Exception as exc:  # PIL raises several types for corrupt files
        return None, f"{image}: not a readable image ({exc})"
    try:
        with Image.open(mask) as img:
            img.load()
            mode, size = img.mode, img.size
            label = np.asarray(img, dtype=np.uint8) if mode in LABEL_MODES else None
    except Exception as exc:
        return None, f"{mask}: not a readable image ({exc})"
    if label is None:
        return None, (f"{mask}: mode {mode!r}; label maps must be palette ('P') or grayscale ('L') PNGs of class "
                      "ids (convert colour masks to ids first)")
    if size != image_size:
        return None, f"{mask}: {size[1]}x{size[0]} but its image {image} is {image_size[1]}x{image_size[0]}"
    counts = np.bincount(label.ravel(), minlength=256)
    bad = [v for v in np.nonzero(counts)[0].tolist() if v >= num_classes and v != IGNORE_INDEX]
    if bad:
        return None, (f"{mask}: class ids {bad[:8]} outside 0..{num_classes - 1} (255 = ignore); check "
                      f"dataset.num_classes={num_classes} or the mask encoding")
    return [v for v in np.nonzero(counts[:num_classes])[0].tolist()], None


class _Cache:
    """One JSON file per data root: mask path -> (stamps of mask and image, num_classes, present ids)."""

    def __init__(self, key: str):
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        self.path = cache_dir() / "checks" / f"{digest}.json"
        self.entries: Dict[str, list] = {}
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") == CACHE_VERSION:
                self.entries = data["entries"]
        except (OSError, ValueError, KeyError):
            pass
        self.dirty = False

    def get(self, stamp: list, mask: str) -> Optional[List[int]]:
        entry = self.entries.get(mask)
        return entry[1] if entry is not None and entry[0] == stamp else None

    def put(self, stamp: list, mask: str, present: List[int]) -> None:
        self.entries[mask] = [stamp, present]
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, json.dumps({"version": CACHE_VERSION, "entries": self.entries}).encode())
        except OSError as exc:  # a read-only home only costs the next run a re-scan
            log.debug("data check cache not written (%s)", exc)


def scan_label_maps(pairs: Sequence[Tuple[str, Path, Path]], num_classes: int, what: str,
                    workers: int | None = None, progress: bool = True) -> Dict[str, List[int]]:
    """Check ``(id, image, mask)`` triples; return id -> class ids present. Raises listing every bad file."""
    if not pairs:
        return {}
    cache = _Cache(str(Path(pairs[0][2]).parent.resolve()))
    present: Dict[str, List[int]] = {}
    todo = []
    for image_id, image, mask in pairs:
        try:
            stamp = [*_stamp(Path(mask)), *_stamp(Path(image)), num_classes]
        except OSError:
            stamp = None
        hit = cache.get(stamp, str(mask)) if stamp is not None else None
        if hit is not None:
            present[image_id] = hit
        else:
            todo.append((image_id, image, mask, stamp))
    problems: List[str] = []
    if todo:
        workers = workers or min(8, os.cpu_count() or 1)
        bar = None
        if progress and len(todo) >= 500:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc=f"checking {what}", unit="file")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = pool.map(lambda t: check_one(str(t[1]), str(t[2]), num_classes), todo, chunksize=32)
            for (image_id, _, mask, stamp), (ids, problem) in zip(todo, results):
                if problem is not None:
                    problems.append(problem)
                else:
                    present[image_id] = ids
                    if stamp is not None:
                        cache.put(stamp, str(mask), ids)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        cache.save()
    if problems:
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DataFormatError(f"{len(problems)} of {len(pairs)} {what} are unusable (found before training):\n  "
                              + "\n  ".join(problems[:10]) + more)
    return present


def labels_from_present(present: Dict[str, List[int]], num_classes: int) -> Dict[str, np.ndarray]:
    """Image-level multi-hot labels (foreground classes) from the ids present in each mask."""
    out = {}
    for image_id, ids in present.items():
        vec = np.zeros(num_classes - 1, np.float32)
        fg = [i - 1 for i in ids if 0 < i < num_classes]
        vec[fg] = 1.0
        out[image_id] = vec
    return out
