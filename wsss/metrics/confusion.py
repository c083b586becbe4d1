"""Confusion-matrix arithmetic shared by training validation, ``wsss.evaluate`` and the curve.

Two mIoU conventions are reported everywhere:
* ``mIoU``: mean over classes that appear in GT or prediction (NaN-free, the usual one);
* ``mIoU_seam``: SEAM's ``evaluation.py``: IoU = TP / (T + P - TP + 1e-10) for every class,
  an absent class counting 0, mean over all classes.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch

IGNORE_INDEX = 255


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(num_classes x num_classes) int64 counts, rows = GT, cols = prediction."""
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if target.numel() and (target.max() >= num_classes or target.min() < 0):
        raise ValueError(f"GT class id {int(target.max())} outside 0..{num_classes - 1} (255 = ignore)")
    if pred.numel() and (pred.max() >= num_classes or pred.min() < 0):
        raise ValueError(f"predicted class id {int(pred.max())} outside 0..{num_classes - 1}")
    idx = target * num_classes + pred
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def confusion_matrix_np(pred: np.ndarray, target: np.ndarray, num_classes: int,
                        ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    return confusion_matrix(torch.from_numpy(np.asarray(pred)), torch.from_numpy(np.asarray(target)),
                            num_classes, ignore_index).numpy()


def scores_from_confusion(conf, class_names: Sequence[str] | None = None) -> Dict[str, object]:
    """All reported numbers from one confusion matrix (float64 arithmetic)."""
    conf = np.asarray(conf, dtype=np.float64)
    n = conf.shape[0]
    tp = np.diag(conf)
    gt = conf.sum(axis=1)
    pr = conf.sum(axis=0)
    union = gt + pr - tp
    present = union > 0
    iou = np.where(present, tp / np.maximum(union, 1), np.nan)
    iou_seam = tp / (union + 1e-10)
    precision = np.where(pr > 0, tp / np.maximum(pr, 1), np.nan)
    recall = np.where(gt > 0, tp / np.maximum(gt, 1), np.nan)
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    total = conf.sum()
    return {
        "mIoU": float(np.nanmean(iou)) if present.any() else 0.0,
        "mIoU_seam": float(iou_seam.mean()),
        "pixel_acc": float(tp.sum() / total) if total else 0.0,
        "IoU": {names[i]: (float(iou[i]) if present[i] else None) for i in range(n)},
        "IoU_seam": {names[i]: float(iou_seam[i]) for i in range(n)},
        "precision": {names[i]: (None if np.isnan(precision[i]) else float(precision[i])) for i in range(n)},
        "recall": {names[i]: (None if np.isnan(recall[i]) else float(recall[i])) for i in range(n)},
    }
