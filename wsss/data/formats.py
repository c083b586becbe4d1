"""Readers and writers for the file formats the seed repos use.

Palette PNGs (VOC ``SegmentationClass``), grayscale label PNGs
(``SegmentationClassAug``), SEAM-style score dicts saved with ``np.save``,
``cls_labels.npy`` and split lists in both the plain and the SEAM form.
Every writer is atomic (temp file + rename) so killed jobs leave no half files.
"""
from __future__ import annotations

import functools
import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Mapping

import numpy as np
from PIL import Image

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
IGNORE_INDEX = 255


class DataFormatError(ValueError):
    """A file exists but does not hold what the pipeline expects."""


def voc_palette() -> List[int]:
    """The 256-entry PASCAL VOC colour map (bit-interleaved), flat RGB list."""
    return list(_voc_palette())


@functools.lru_cache(maxsize=None)
def _voc_palette() -> tuple:
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.extend((r, g, b))
    return tuple(palette)


def _atomic_target(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would make outputs unreadable to other users
    return Path(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_label_png(path: str | os.PathLike, label: np.ndarray, palette: bool = True) -> None:
    """Write a uint8 label map as a palette PNG (VOC colours) or grayscale PNG, atomically."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise DataFormatError(f"{path}: label map must be 2-D, got shape {label.shape}")
    img = Image.fromarray(label.astype(np.uint8), mode="P" if palette else "L")
    if palette:
        img.putpalette(voc_palette())
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_label_png(path: str | os.PathLike, num_classes: int | None = None) -> np.ndarray:
    """Read a label PNG (palette 'P' or grayscale 'L') as uint8 class ids.

    RGB colour masks are refused: their pixel values are colours, not ids.
    With ``num_classes`` every id must lie in 0..num_classes-1 or be 255.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    try:
        img = Image.open(path)
        img.load()
    except Exception as exc:  # PIL raises several types for corrupt files
        raise DataFormatError(f"{path}: not a readable image ({exc})") from exc
    if img.mode not in ("P", "L"):
        raise DataFormatError(
            f"{path}: label PNG has mode {img.mode!r}; expected a palette ('P') or grayscale ('L') "
            "image whose pixel values are class ids (convert colour masks to ids first)"
        )
    label = np.asarray(img, dtype=np.uint8)
    if num_classes is not None:
        bad = (label >= num_classes) & (label != IGNORE_INDEX)
        if bad.any():
            values = sorted(set(np.unique(label[bad]).tolist()))
            raise DataFormatError(
                f"{path}: class ids {values[:10]} outside 0..{num_classes - 1} (255 = ignore); "
                "check the data set's number of classes or the mask encoding"
            )
    return label


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an RGB image as HxWx3 uint8 with a clear error for missing/corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as exc:
        raise DataFormatError(f"{path}: not a readable image ({exc})") from exc


def save_pickled_dict(path: str | os.PathLike, payload: dict) -> None:
    """``np.save`` of a dict (the seed repos' ``.npy`` dicts), written atomically."""
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, payload, allow_pickle=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


#: score-file formats: the seed repos' pickled float32 dict, or float16 maps in a compressed .npz (COCO-sized runs)
SCORE_FORMATS = {"npy": ".npy", "npz16": ".npz"}


def save_score_dict(path: str | os.PathLike, scores: Mapping[int, np.ndarray], fmt: str = "npy") -> None:
    """Write ``{fg class index (0-based): HxW}``: ``npy`` with ``np.save`` of a float32 dict like the seed repos;
    ``npz16`` as float16 arrays named by class index in a compressed ``.npz`` (``path``'s suffix is replaced)."""
    if fmt == "npy":
        save_pickled_dict(path, {int(k): np.asarray(v, dtype=np.float32) for k, v in scores.items()})
        return
    if fmt != "npz16":
        raise ValueError(f"scores_format={fmt!r}; use one of {sorted(SCORE_FORMATS)}")
    buf = io.BytesIO()
    np.savez_compressed(buf, **{str(int(k)): np.asarray(v, dtype=np.float16) for k, v in scores.items()})
    atomic_write_bytes(Path(path).with_suffix(".npz"), buf.getvalue())


def score_file(folder: str | os.PathLike, image_id: str) -> Path:
    """``folder/ID.npy``, or ``folder/ID.npz`` when only that exists (either format reads the same)."""
    npy = Path(folder) / f"{image_id}.npy"
    npz = npy.with_suffix(".npz")
    return npz if not npy.is_file() and npz.is_file() else npy


def _load_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except Exception as exc:
        raise DataFormatError(f"{path}: not a compressed score file ({exc})") from exc


def load_score_dict(path: str | os.PathLike, shape: tuple[int, int] | None = None,
                    num_fg: int | None = None) -> Dict[int, np.ndarray]:
    """Read a SEAM-style score ``.npy`` (a pickled dict) or an ``npz16`` file; validate keys and map sizes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"score file not found: {path}")
    if path.suffix == ".npz":
        obj = _load_npz(path)
    else:
        try:
            obj = np.load(path, allow_pickle=True)
        except Exception as exc:
            raise DataFormatError(f"{path}: not a numpy file ({exc})") from exc
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise DataFormatError(
            f"{path}: expected a dict {{class index: HxW score map}} saved with np.save, "
            f"got {type(obj).__name__}{getattr(obj, 'shape', '')}"
        )
    out: Dict[int, np.ndarray] = {}
    for key, value in obj.items():
        try:
            k = int(key)
        except (TypeError, ValueError):
            raise DataFormatError(f"{path}: key {key!r} is not a class index") from None
        arr = np.asarray(value, dtype=np.float32)
        if arr.ndim != 2:
            raise DataFormatError(f"{path}: map for class {k} has shape {arr.shape}, expected HxW")
        if shape is not None and arr.shape != tuple(shape):
            raise DataFormatError(
                f"{path}: map for class {k} is {arr.shape[0]}x{arr.shape[1]} but the image/GT is "
                f"{shape[0]}x{shape[1]}; scores must be at the original image size"
            )
        if num_fg is not None and not 0 <= k < num_fg:
            raise DataFormatError(f"{path}: class index {k} outside 0..{num_fg - 1}")
        out[k] = arr
    return out


def read_split_list(path: str | os.PathLike) -> List[str]:
    """Image ids from a split list: ``ID`` per line or SEAM's ``/JPEGImages/ID.jpg /Seg.../ID.png``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path}")
    ids = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        first = line.split()[0]
        ids.append(Path(first).stem if ("/" in first or "." in first) else first)
    if not ids:
        raise DataFormatError(f"{path}: split list is empty")
    return ids


def write_split_list(path: str | os.PathLike, ids: Iterable[str]) -> None:
    atomic_write_bytes(path, ("\n".join(ids) + "\n").encode())


class _RestrictedUnpickler(pickle.Unpickler):
    """Lets ``cls_labels.npy`` load without executing arbitrary pickled code."""

    _ALLOWED = {("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("builtins", "dict"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def load_cls_labels_npy(path: str | os.PathLike, num_classes: int = 20) -> Dict[str, np.ndarray]:
    """Read SEAM's ``cls_labels.npy`` (pickled dict id -> float32 multi-hot) safely."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image-level label file not found: {path}")
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                np.lib.format.read_array_header_1_0(fh)
            else:
                np.lib.format.read_array_header_2_0(fh)
            obj = _RestrictedUnpickler(fh).load()
        except Exception as exc:
            raise DataFormatError(f"{path}: not a cls_labels.npy dict ({exc})") from exc
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: expected a dict image id -> multi-hot vector")
    out = {}
    for key, value in obj.items():
        vec = np.asarray(value, dtype=np.float32).reshape(-1)
        if vec.shape[0] != num_classes:
            raise DataFormatError(f"{path}: label of {key} has {vec.shape[0]} entries, expected {num_classes}")
        out[str(key)] = vec
    return out


def save_cls_labels_npy(path: str | os.PathLike, labels: Mapping[str, np.ndarray]) -> None:
    """Write labels in SEAM's format (what the seed repos read with ``np.load(...).item()``)."""
    payload = {str(k): np.asarray(v, dtype=np.float32) for k, v in labels.items()}
    save_pickled_dict(path, payload)


def save_cls_labels_txt(path: str | os.PathLike, labels: Mapping[str, np.ndarray]) -> None:
    """Plain, pickle-free form: ``ID c1 c2 ...`` (1-based fg class ids, i.e. VOC label ids)."""
    lines = []
    for key in sorted(labels):
        ids = (np.flatnonzero(np.asarray(labels[key]) > 0.5) + 1).tolist()
        lines.append(" ".join([key] + [str(i) for i in ids]))
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def load_cls_labels_txt(path: str | os.PathLike, num_classes: int = 20) -> Dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image-level label file not found: {path}")
    out = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        vec = np.zeros(num_classes, dtype=np.float32)
        for tok in parts[1:]:
            cid = int(tok)
            if not 1 <= cid <= num_classes:
                raise DataFormatError(f"{path}:{lineno}: class id {cid} outside 1..{num_classes}")
            vec[cid - 1] = 1.0
        out[parts[0]] = vec
    return out


def load_cls_labels(path: str | os.PathLike, num_classes: int = 20) -> Dict[str, np.ndarray]:
    """Image-level labels from ``.npy`` (SEAM) or ``.txt`` (wsss plain form)."""
    if str(path).endswith(".npy"):
        return load_cls_labels_npy(path, num_classes)
    return load_cls_labels_txt(path, num_classes)
