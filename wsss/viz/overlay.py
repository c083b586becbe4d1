"""Image / GT / prediction overlays as plain RGB arrays.

Loggers (W&B in train, evaluate and pseudo_label) take an ``HxWx3 uint8`` array,
so the grid is built with numpy + PIL only: no plotting library, no display.
Labels use the VOC palette; 255 (ignore / unlabelled) keeps VOC's cream colour.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from wsss.data.formats import voc_palette

_PALETTE = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)
_GAP = 4  # pixels of white between tiles


def colorize_label(label: np.ndarray) -> np.ndarray:
    """Class ids (HxW, 0..255) to VOC colours (HxWx3 uint8)."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {label.shape}")
    return _PALETTE[np.clip(label, 0, 255).astype(np.uint8)]


def blend_label(image: np.ndarray | None, label: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Colour the labelled pixels over the image; background (0) shows the image untouched.

    Without an image the label colours are drawn on mid grey.
    """
    label = np.asarray(label)
    if image is None:
        image = np.full(label.shape + (3,), 128, np.uint8)
    image = _as_rgb_uint8(image)
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} differ in size")
    colour = colorize_label(label).astype(np.float32)
    out = image.astype(np.float32)
    mask = (label != 0)[..., None]
    out = np.where(mask, (1.0 - alpha) * out + alpha * colour, out)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be HxW or HxWx3, got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image


def _resize(tile: np.ndarray, height: int) -> np.ndarray:
    h, w = tile.shape[:2]
    width = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(tile).resize((width, height), Image.BILINEAR))


def overlay_grid(images: Sequence[np.ndarray | None], *label_columns: Sequence[np.ndarray | None],
                 alpha: float = 0.6, tile_height: int = 160, max_rows: int = 8) -> np.ndarray:
    """One row per image: the image, then one overlay per label column (e.g. GT, prediction).

    A ``None`` image is drawn as grey, a ``None`` label as a blank tile. Tiles are
    scaled to ``tile_height`` keeping their aspect ratio (labels are blended at full
    resolution first, so class boundaries stay sharp). Returns ``HxWx3 uint8``.
    """
    rows = []
    n = min(len(images), max_rows)
    if n == 0:
        raise ValueError("overlay_grid needs at least one image")
    for col in label_columns:
        if len(col) < n:
            raise ValueError(f"a label column has {len(col)} entries for {n} images")
    for i in range(n):
        labels = [col[i] for col in label_columns]
        shape = next((np.shape(x)[:2] for x in [images[i], *labels] if x is not None), None)
        if shape is None:
            raise ValueError(f"row {i} has neither an image nor a label")
        base = _as_rgb_uint8(images[i]) if images[i] is not None else np.full(shape + (3,), 128, np.uint8)
        tiles = [base]
        for lab in labels:
            tiles.append(np.full_like(base, 255) if lab is None else blend_label(base, lab, alpha))
        tiles = [_resize(t, tile_height) for t in tiles]
        gap = np.full((tile_height, _GAP, 3), 255, np.uint8)
        row = tiles[0]
        for t in tiles[1:]:
            row = np.concatenate([row, gap, t], axis=1)
        rows.append(row)
    width = max(r.shape[1] for r in rows)
    padded = []
    for r in rows:
        pad = np.full((tile_height, width - r.shape[1], 3), 255, np.uint8)
        padded.append(np.concatenate([r, pad], axis=1))
        padded.append(np.full((_GAP, width, 3), 255, np.uint8))
    return np.concatenate(padded[:-1], axis=0)


def with_legend(image: np.ndarray, class_ids: Sequence[int], class_names: Sequence[str],
                swatch: int = 14) -> np.ndarray:
    """``image`` with a strip below naming each class of ``class_ids`` beside its VOC colour."""
    from PIL import ImageDraw

    image = _as_rgb_uint8(image)
    h, w = image.shape[:2]
    labels = [(int(c), class_names[int(c)] if int(c) < len(class_names) else str(c)) for c in class_ids]
    canvas = Image.new("RGB", (w, h + swatch + 8), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, 0))
    draw = ImageDraw.Draw(canvas)
    if not labels:
        draw.text((4, h + 4), "background only", fill=(0, 0, 0))
    draw_legend(draw, 4, h + 4, [c for c, _ in labels], class_names, swatch)
    return np.asarray(canvas)


def draw_legend(draw, x: int, y: int, class_ids: Sequence[int], class_names: Sequence[str], swatch: int = 12) -> None:
    """One row of VOC-colour swatches with the class names, from ``(x, y)``."""
    for cid in class_ids:
        name = class_names[int(cid)] if int(cid) < len(class_names) else str(cid)
        draw.rectangle([x, y, x + swatch, y + swatch - 1], fill=tuple(int(v) for v in _PALETTE[int(cid)]),
                       outline=(0, 0, 0))
        draw.text((x + swatch + 3, y), name, fill=(0, 0, 0))
        x += swatch + 10 + int(draw.textlength(name))
