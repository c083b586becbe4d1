"""mIoU of a folder of predictions (label PNGs or SEAM score dicts) against a folder of GT masks.

Numbers equal YudeWang/SEAM ``evaluation.py`` (``mIoU_seam``: IoU = TP/(T+P-TP+1e-10), mean over all
classes) and are also given over present classes (``mIoU``), as fractions. ``type=npy``: the background is
a constant plane at the threshold and the prediction is SEAM's argmax (ties to background, then to the lower
class; absent classes are zero planes); a whole threshold curve comes from one pass over the files
(:mod:`wsss.metrics.curve`). Library code of ``wsss.evaluate``, also used by ``wsss.infer``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from wsss.data.formats import IGNORE_INDEX, DataFormatError, load_score_dict, read_label_png, score_file
from wsss.metrics.confusion import scores_from_confusion
from wsss.metrics.curve import ThresholdCurve, best_foreground, best_threshold_index, edge_warning
from wsss.workers import map_tasks

TYPES = ("png", "npy")


# ----- reading one image ---------------------------------------------------------------------
def read_gt(path: Path, num_classes: int) -> np.ndarray:
    return read_label_png(path, num_classes)


def read_png_prediction(path: Path, gt: np.ndarray, num_classes: int) -> np.ndarray:
    pred = read_label_png(path, num_classes)
    if pred.shape != gt.shape:
        raise DataFormatError(f"{path}: prediction is {pred.shape[0]}x{pred.shape[1]} but its GT is "
                              f"{gt.shape[0]}x{gt.shape[1]}; predictions must be at the original image size")
    return pred


def read_npy_prediction(path: Path, gt: np.ndarray, num_classes: int):
    """Best fg class and score per pixel of one score dict, validated against its GT."""
    scores = load_score_dict(path, shape=gt.shape, num_fg=num_classes - 1)
    for k, v in scores.items():
        if np.isnan(v).any():
            raise DataFormatError(f"{path}: the map of class index {k} contains NaN; re-run inference "
                                  "(a NaN would win every argmax)")
    return best_foreground(scores, num_classes, gt.shape)


def predict_npy(path: Path, gt: np.ndarray, num_classes: int, threshold: float) -> np.ndarray:
    """The label map at one threshold (for overlays); float32 comparison like SEAM."""
    cls, score = read_npy_prediction(path, gt, num_classes)
    return np.where(score > np.float32(threshold), cls, 0).astype(np.uint8)


# ----- accumulation (runs in worker processes) ----------------------------------------------
def _png_counts(job) -> np.ndarray:
    pred_dir, gt_dir, ids, num_classes = job
    n = num_classes
    counts = np.zeros(n * (n + 1), np.int64)  # last column: prediction 255 ("no label")
    for name in ids:
        gt = read_gt(Path(gt_dir) / f"{name}.png", n)
        pred = read_png_prediction(Path(pred_dir) / f"{name}.png", gt, n)
        keep = gt != IGNORE_INDEX
        p = pred[keep].astype(np.int64)
        p[p == IGNORE_INDEX] = n
        counts += np.bincount(gt[keep].astype(np.int64) * (n + 1) + p, minlength=counts.size)
    return counts.reshape(n, n + 1)


def _npy_counts(job) -> np.ndarray:
    pred_dir, gt_dir, ids, num_classes, thresholds = job
    curve = ThresholdCurve(thresholds, num_classes)
    for name in ids:
        gt = read_gt(Path(gt_dir) / f"{name}.png", num_classes)
        curve.update(gt, *read_npy_prediction(score_file(pred_dir, name), gt, num_classes))
    return curve.counts


def _run_jobs(fn, jobs: list, workers: int, progress: bool):
    """Per-chunk counts from ``workers`` processes, in chunk order (so sums are reproducible)."""
    return map_tasks(fn, jobs, workers if len(jobs) > 1 else 0, progress, "evaluate", [len(j[2]) for j in jobs])


def _chunks(ids: Sequence[str], workers: int) -> List[List[str]]:
    size = max(1, min(64, -(-len(ids) // max(1, workers * 8))))
    return [list(ids[i:i + size]) for i in range(0, len(ids), size)]


# ----- checks --------------------------------------------------------------------------------
def check_inputs(pred_dir: Path, gt_dir: Path, ids: Sequence[str], ext: str) -> None:
    """All missing files at once, so a wrong folder or list is fixed in one go."""
    for label, folder in (("pred_dir", pred_dir), ("gt_dir", gt_dir)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{label} {folder} is not a directory")
    for label, folder, suffix in (("prediction", pred_dir, ext), ("GT", gt_dir, ".png")):
        exists = (lambda i: score_file(folder, i).is_file()) if suffix == ".npy" else \
            (lambda i, f=folder, s=suffix: (f / f"{i}{s}").is_file())  # score dicts: .npy or npz16's .npz
        missing = [i for i in ids if not exists(i)]
        if missing:
            shown = ", ".join(str(folder / f"{i}{suffix}") for i in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            hint = " (is type=npy|png right?)" if label == "prediction" else ""
            raise FileNotFoundError(f"{len(missing)} of {len(ids)} {label} files missing{hint}: {shown}{more}")


# ----- results -------------------------------------------------------------------------------
def summarize(conf: np.ndarray, class_names: Sequence[str], unlabelled: np.ndarray | None = None) -> dict:
    """``scores_from_confusion`` plus, per GT class, predictions that carry no label (PNG 255).

    Those pixels count in T but in no P, as in SEAM; they enter as an extra prediction
    column whose class is then dropped from every mean.
    """
    names = list(class_names)
    n = len(names)
    if unlabelled is None or not np.any(unlabelled):
        res = scores_from_confusion(conf, names)
    else:
        ext = np.zeros((n + 1, n + 1), np.int64)
        ext[:n, :n] = conf
        ext[:n, n] = unlabelled
        res = scores_from_confusion(ext, names + ["<no label>"])
        for key in ("IoU", "IoU_seam", "precision", "recall"):
            res[key].pop("<no label>")
        iou = [np.nan if v is None else v for v in res["IoU"].values()]
        res["mIoU"] = float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0
        res["mIoU_seam"] = float(np.mean(list(res["IoU_seam"].values())))
    res["confusion"] = np.asarray(conf).tolist()
    if unlabelled is not None:
        res["unlabelled"] = np.asarray(unlabelled).tolist()
    return res


def evaluate_dir(pred_dir, gt_dir, ids: Sequence[str], type: str = "png", num_classes: int = 21,
                 class_names: Sequence[str] | None = None, threshold: float | None = None,
                 curve_thresholds: Sequence[float] | None = None, workers: int = 1,
                 progress: bool = False) -> dict:
    """Evaluate ``pred_dir`` against ``gt_dir`` over ``ids``; the result dict the CLI writes as JSON.

    For ``npy`` the reported metrics are at ``threshold``, or at the curve's best threshold
    (SEAM convention) when ``threshold`` is None and ``curve_thresholds`` is given.
    """
    if type not in TYPES:
        raise ValueError(f"type={type!r}; use one of {TYPES}")
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for num_classes={num_classes}")
    pred_dir, gt_dir, ids = Path(pred_dir), Path(gt_dir), list(ids)
    if not ids:
        raise ValueError("no image ids to evaluate")
    check_inputs(pred_dir, gt_dir, ids, "." + type)
    out: Dict[str, object] = {"type": type, "pred_dir": str(pred_dir), "gt_dir": str(gt_dir),
                              "num_images": len(ids), "num_classes": num_classes, "class_names": names}
    chunks = _chunks(ids, workers)
    if type == "png":
        jobs = [(str(pred_dir), str(gt_dir), c, num_classes) for c in chunks]
        counts = sum(_run_jobs(_png_counts, jobs, workers, progress))
        out.update(summarize(counts[:, :num_classes], names, counts[:, num_classes]))
        return out

    if threshold is None and curve_thresholds is None:
        raise ValueError("type=npy needs threshold=T (the background score) or curve=true; "
                         "SEAM's evaluation.py has no default either")
    thresholds = list(curve_thresholds or []) + ([float(threshold)] if threshold is not None else [])
    jobs = [(str(pred_dir), str(gt_dir), c, num_classes, thresholds) for c in chunks]
    curve = ThresholdCurve(thresholds, num_classes)
    for counts in _run_jobs(_npy_counts, jobs, workers, progress):
        curve.merge(counts)
    confs = curve.confusions()
    if curve_thresholds:
        k = len(curve_thresholds)
        per_t = [scores_from_confusion(c, names) for c in confs[:k]]
        seam = [r["mIoU_seam"] for r in per_t]
        best = best_threshold_index(seam)
        out["curve"] = {"thresholds": [float(t) for t in curve_thresholds], "mIoU_seam": seam,
                        "mIoU": [r["mIoU"] for r in per_t],
                        "IoU_seam": [[r["IoU_seam"][n] for n in names] for r in per_t],
                        "best": {"index": best, "threshold": float(curve_thresholds[best]),
                                 "mIoU_seam": seam[best], "mIoU": per_t[best]["mIoU"]},
                        "warning": edge_warning(curve_thresholds, best)}
    if threshold is not None:
        out["threshold"], conf = float(threshold), confs[-1]
    else:
        out["threshold"], conf = out["curve"]["best"]["threshold"], confs[out["curve"]["best"]["index"]]
    out.update(summarize(conf, names))
    return out
