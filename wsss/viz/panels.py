"""Per-image panels: image | GT | class score heat-maps | prediction | CRF, titled, with a legend.

Why: a mean IoU hides which images fail and how; the worst and best images by their own IoU, with the score
maps that produced them, show it at a glance. Drawn with numpy + PIL only (no display), as an RGB array that
is written to disk and sent to W&B alike.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from wsss.viz.overlay import blend_label, draw_legend

TILE = 200       # tile height in pixels (readable in W&B's media panel)
TITLE = 16       # title strip height
GAP = 4


def heatmap(scores: np.ndarray) -> np.ndarray:
    """A ``H x W`` score map in [0, 1] as a blue-to-red RGB image."""
    s = np.clip(np.nan_to_num(np.asarray(scores, np.float32)), 0.0, 1.0)
    return np.stack([255 * s, 255 * (1 - np.abs(2 * s - 1)), 255 * (1 - s)], axis=-1).astype(np.uint8)


def _tile(array: np.ndarray, title: str) -> Image.Image:
    img = Image.fromarray(array)
    width = max(1, round(img.width * TILE / img.height))
    canvas = Image.new("RGB", (width, TILE + TITLE), (255, 255, 255))
    canvas.paste(img.resize((width, TILE), Image.NEAREST), (0, TITLE))
    ImageDraw.Draw(canvas).text((2, 2), title, fill=(0, 0, 0))
    return canvas


def image_panel(name: str, image: Optional[np.ndarray], gt: Optional[np.ndarray], pred: np.ndarray,
                class_names: Sequence[str], crf: Optional[np.ndarray] = None,
                heatmaps: Optional[Mapping[int, np.ndarray]] = None, score: Optional[float] = None) -> np.ndarray:
    """One row of tiles for image ``name``: the image, GT, one heat-map per class of ``heatmaps`` ({class id:
    H x W scores}), the prediction and the CRF labels, titled, over a legend of the classes present."""
    base = image if image is not None else np.full(pred.shape + (3,), 128, np.uint8)
    tiles = [_tile(base, "image")]
    if gt is not None:
        tiles.append(_tile(blend_label(base, np.where(gt == 255, 0, gt)), "GT"))
    for cid, scores in (heatmaps or {}).items():
        tiles.append(_tile(heatmap(scores), f"score: {class_names[cid]}"))
    tiles.append(_tile(blend_label(base, pred), "prediction"))
    if crf is not None:
        tiles.append(_tile(blend_label(base, crf), "CRF"))
    present = sorted({int(c) for arr in (gt, pred, crf) if arr is not None for c in np.unique(arr)} - {0, 255})
    width = sum(t.width for t in tiles) + GAP * (len(tiles) - 1)
    header = f"{name}" + ("" if score is None else f"  (image mIoU {score:.3f})")
    canvas = Image.new("RGB", (max(width, 200), TITLE + TILE + TITLE + 22), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 2), header, fill=(0, 0, 0))
    x = 0
    for t in tiles:
        canvas.paste(t, (x, TITLE))
        x += t.width + GAP
    draw_legend(draw, 4, 2 * TITLE + TILE + 4, present, class_names)
    return np.asarray(canvas)
