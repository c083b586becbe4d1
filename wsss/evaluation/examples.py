"""The worst and best images of a prediction folder by their own mIoU, as panels and a per-image CSV.

``overlays=N`` of ``wsss.infer`` and ``wsss.evaluate``: every image's mIoU (over the classes in its GT or its
prediction, 255 ignored) goes to ``per_image_iou.csv`` (worst first), and the N worst and N best images become
``overlays/worst_KK_ID.png`` / ``overlays/best_KK_ID.png`` panels (:func:`wsss.viz.panels.image_panel`): image,
GT, the score maps of the classes involved, prediction and CRF labels.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from wsss.data.formats import (IGNORE_INDEX, atomic_write_bytes, load_score_dict, read_image, read_label_png,
                               score_file)
from wsss.metrics.folders import predict_npy, read_gt, read_png_prediction

MAX_HEATMAPS = 3


def image_miou(gt: np.ndarray, pred: np.ndarray) -> float:
    """Mean IoU of one image over the classes in its GT or prediction (GT 255 ignored)."""
    keep = gt != IGNORE_INDEX
    g, p = gt[keep].astype(np.int64), pred[keep].astype(np.int64)
    ious = []
    for c in np.union1d(np.unique(g), np.unique(p[p != IGNORE_INDEX])):
        inter = np.sum((g == c) & (p == c))
        union = np.sum((g == c) | (p == c))
        ious.append(inter / union if union else 1.0)
    return float(np.mean(ious)) if ious else 1.0


def prediction_of(pred_dir: Path, name: str, gt: np.ndarray, kind: str, num_classes: int,
                  threshold: Optional[float]) -> np.ndarray:
    """The label map of ``name``: its PNG, or its score file at ``threshold`` (checked against its GT)."""
    if kind == "png":
        return read_png_prediction(pred_dir / f"{name}.png", gt, num_classes)
    return predict_npy(score_file(pred_dir, name), gt, num_classes, threshold)


def rank_images(pred_dir: Path, gt_dir: Path, ids: Sequence[str], kind: str, num_classes: int,
                threshold: Optional[float] = None) -> List[Tuple[str, float]]:
    """``[(id, image mIoU)]``, worst first (ties by id)."""
    scores = []
    for name in ids:
        gt = read_gt(gt_dir / f"{name}.png", num_classes)
        scores.append((name, image_miou(gt, prediction_of(pred_dir, name, gt, kind, num_classes, threshold))))
    return sorted(scores, key=lambda s: (s[1], s[0]))


def _heatmaps(scores_file: Optional[Path], gt: np.ndarray, pred: np.ndarray) -> Dict[int, np.ndarray]:
    if scores_file is None or not scores_file.is_file():
        return {}
    scores = load_score_dict(scores_file)
    wanted = sorted({int(c) for c in np.unique(np.concatenate([gt.ravel(), pred.ravel()]))} - {0, IGNORE_INDEX})
    return {c: scores[c - 1] for c in wanted if c - 1 in scores}  # score dicts key foreground class k as k-1


def write_examples(out_dir: Path, ids: Sequence[str], pred_dir: Path, gt_dir: Path, kind: str, num_classes: int,
                   class_names: Sequence[str], count: int, threshold: Optional[float] = None,
                   image_of: Optional[Dict[str, Path]] = None, scores_dir: Optional[Path] = None,
                   crf_dir: Optional[Path] = None) -> dict:
    """``per_image_iou.csv`` and the worst / best ``count`` panels in ``out_dir/overlays``; returns their paths
    and the panels as arrays (``{"csv", "panels": [(tag, id, path, array)]}``) for W&B."""
    from wsss.viz.panels import image_panel

    ranking = rank_images(Path(pred_dir), Path(gt_dir), ids, kind, num_classes, threshold)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["rank", "id", "mIoU"])
    writer.writerows([[i + 1, name, f"{score:.6f}"] for i, (name, score) in enumerate(ranking)])
    csv_path = Path(out_dir) / "per_image_iou.csv"
    atomic_write_bytes(csv_path, buf.getvalue().encode())
    count = min(int(count), len(ranking))
    picks = [("worst", k, ranking[k]) for k in range(count)]
    picks += [("best", k, ranking[-1 - k]) for k in range(count) if len(ranking) - 1 - k >= count]
    panels = []
    for tag, k, (name, score) in picks:
        gt = read_gt(Path(gt_dir) / f"{name}.png", num_classes)
        pred = prediction_of(Path(pred_dir), name, gt, kind, num_classes, threshold)
        image = None
        path = (image_of or {}).get(name)
        if path is not None and Path(path).is_file():
            image = read_image(path)
            image = image if image.shape[:2] == gt.shape else None
        crf = None
        if crf_dir is not None and (Path(crf_dir) / f"{name}.png").is_file():
            crf = read_label_png(Path(crf_dir) / f"{name}.png")
        scores_file = score_file(scores_dir, name) if scores_dir is not None else None
        heat = dict(list(_heatmaps(scores_file, gt, pred).items())[:MAX_HEATMAPS])
        panel = image_panel(name, image, gt, pred, class_names, crf=crf, heatmaps=heat, score=score)
        target = Path(out_dir) / "overlays" / f"{tag}_{k + 1:02d}_{name}.png"
        buf = io.BytesIO()
        Image.fromarray(panel).save(buf, format="PNG")
        atomic_write_bytes(target, buf.getvalue())
        panels.append((tag, name, str(target), panel))
    return {"csv": str(csv_path), "panels": panels}
