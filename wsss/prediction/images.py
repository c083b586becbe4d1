"""Images of any folder as ``wsss.predict`` takes them: found by extension, named for output, decoded to RGB.

Users' folders are not VOC: mixed formats and cases, sub-folders, phone photos with EXIF orientation, scans in
CMYK, 16-bit PNGs, palette GIF-like PNGs, and the odd truncated file. Every readable image becomes an RGB uint8
array in the orientation a viewer shows; an unreadable one is reported with its reason, never half-decoded.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image, ImageFile, ImageOps

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class UnreadableImage(ValueError):
    """An image file that cannot be decoded completely."""


def find_images(root: Path) -> List[Path]:
    """Every image file under ``root`` (a folder, recursively, or one file), sorted, by extension in any case."""
    if root.is_file():
        if root.suffix.lower() not in EXTENSIONS:
            raise ValueError(f"input={root}: not an image file ({', '.join(EXTENSIONS)}, any case)")
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"input={root}: no such file or folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)


def output_names(root: Path, files: List[Path]) -> Dict[Path, str]:
    """``{file: relative output stem}``: the path under ``root`` with the extension dropped, or kept when two
    inputs would otherwise share a name (``a.jpg`` and ``a.png`` -> ``a.jpg``, ``a.png``)."""
    base = root if root.is_dir() else root.parent
    stems = {f: f.relative_to(base).with_suffix("").as_posix() for f in files}
    clashes = Counter(s.lower() for s in stems.values())
    return {f: (f.relative_to(base).as_posix() if clashes[s.lower()] > 1 else s) for f, s in stems.items()}


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit: scale to 8 bits (clipping would make it white)
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(np.round(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)  # transparent pixels over white, not black
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_any_image(path: Path) -> np.ndarray:
    """``H x W x 3`` uint8 RGB after the EXIF orientation; :class:`UnreadableImage` with the reason otherwise."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey bottom half
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"{exc}") from exc
