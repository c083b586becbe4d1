"""``python -m wsss.evaluate``: mIoU of a prediction folder against GT, optionally over bg thresholds.

    python -m wsss.evaluate pred_dir=DIR gt_dir=ROOT/SegmentationClass list=LIST type=npy|png \
        [threshold=0.2] [curve=true] [out=FILE.json] [workers=N] [logger=wandb]

``type=png``: label PNGs (``P`` or ``L``; 255 in a prediction is "no label" and counts as a miss).
``type=npy``: SEAM score dicts ``{fg index k: HxW}`` for class ``k+1``; the background is a
constant plane at the threshold and the prediction is SEAM's argmax (ties to background, then to
the lower class; absent classes are zero planes). With ``curve=true`` every threshold of
``curve_thresholds`` comes from one pass over the files (:mod:`wsss.metrics.curve`).

Numbers equal YudeWang/SEAM ``evaluation.py`` (``mIoU_seam``: IoU = TP/(T+P-TP+1e-10), mean over
all classes) and are also given over present classes (``mIoU``). Writes the JSON (``out``), a
per-class CSV and, with the curve, ``*_curve.png`` and ``*_per_class.png`` beside it.
"""
from __future__ import annotations

import csv
import io
import json
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, List, Sequence

import hydra
import numpy as np
from omegaconf import DictConfig

from wsss.data.formats import (IGNORE_INDEX, VOC_CLASSES, DataFormatError, atomic_write_bytes,
                               load_score_dict, read_image, read_label_png, read_split_list)
from wsss.metrics.confusion import scores_from_confusion
from wsss.metrics.curve import ThresholdCurve, best_foreground, best_threshold_index, default_thresholds
from wsss.paths import config_dir

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
        curve.update(gt, *read_npy_prediction(Path(pred_dir) / f"{name}.npy", gt, num_classes))
    return curve.counts


def _run_jobs(fn, jobs: list, workers: int, progress: bool, total: int):
    sizes = [len(j[2]) for j in jobs]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="evaluate", unit="img", dynamic_ncols=True)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job, size in zip(jobs, sizes):
                yield fn(job)
                if bar:
                    bar.update(size)
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
                for out, size in zip(pool.map(fn, jobs), sizes):
                    yield out
                    if bar:
                        bar.update(size)
    finally:
        if bar:
            bar.close()


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
        missing = [i for i in ids if not (folder / f"{i}{suffix}").is_file()]
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
        counts = sum(_run_jobs(_png_counts, jobs, workers, progress, len(ids)))
        out.update(summarize(counts[:, :num_classes], names, counts[:, num_classes]))
        return out

    if threshold is None and curve_thresholds is None:
        raise ValueError("type=npy needs threshold=T (the background score) or curve=true; "
                         "SEAM's evaluation.py has no default either")
    thresholds = list(curve_thresholds or []) + ([float(threshold)] if threshold is not None else [])
    jobs = [(str(pred_dir), str(gt_dir), c, num_classes, thresholds) for c in chunks]
    curve = ThresholdCurve(thresholds, num_classes)
    for counts in _run_jobs(_npy_counts, jobs, workers, progress, len(ids)):
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
                                 "mIoU_seam": seam[best], "mIoU": per_t[best]["mIoU"]}}
    if threshold is not None:
        out["threshold"], conf = float(threshold), confs[-1]
    else:
        out["threshold"], conf = out["curve"]["best"]["threshold"], confs[out["curve"]["best"]["index"]]
    out.update(summarize(conf, names))
    return out


# ----- reporting -----------------------------------------------------------------------------
def _pct(x) -> str:
    return "    n/a" if x is None else f"{100.0 * x:7.3f}"


def format_table(res: dict) -> str:
    """Per-class IoU (both conventions), precision, recall, then the two mIoUs, in percent."""
    names = res["class_names"]
    width = max(11, max(len(n) for n in names))
    lines = [f"{'class':>{width}}     IoU  IoU(SEAM)  precision  recall"]
    for name in names:
        lines.append(f"{name:>{width}} {_pct(res['IoU'][name])}   {_pct(res['IoU_seam'][name])}"
                     f"    {_pct(res['precision'][name])} {_pct(res['recall'][name])}")
    lines.append("=" * len(lines[0]))
    t = f" at background threshold {res['threshold']:g}" if res.get("threshold") is not None else ""
    lines.append(f"mIoU (SEAM, mean over all {len(names)}): {100 * res['mIoU_seam']:.3f}%{t}")
    lines.append(f"mIoU (classes present in GT or prediction): {100 * res['mIoU']:.3f}%")
    lines.append(f"pixel accuracy: {100 * res['pixel_acc']:.3f}%")
    if "curve" in res:
        b = res["curve"]["best"]
        lines.append(f"best background threshold: {b['threshold']:g}  mIoU (SEAM) {100 * b['mIoU_seam']:.3f}%"
                     f"  mIoU (present) {100 * b['mIoU']:.3f}%")
    return "\n".join(lines)


def format_curve(res: dict) -> str:
    c = res["curve"]
    return "\n".join(f"background score {t:.3f}\tmIoU {100 * s:.3f}%\t(present classes {100 * p:.3f}%)"
                     for t, s, p in zip(c["thresholds"], c["mIoU_seam"], c["mIoU"]))


def sidecar(out: Path, suffix: str) -> Path:
    return out.with_name(out.stem + suffix)


def write_outputs(res: dict, out: Path) -> Dict[str, str]:
    """JSON, per-class CSV and (with a curve) the curve and per-class plots, all atomically."""
    from wsss.viz.plots import plot_curve, plot_per_class

    written = {"json": str(out)}
    atomic_write_bytes(out, (json.dumps(res, indent=1) + "\n").encode())
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["class", "IoU", "IoU_seam", "precision", "recall"])
    for name in res["class_names"]:
        writer.writerow([name] + ["" if res[k][name] is None else f"{res[k][name]:.6f}"
                                  for k in ("IoU", "IoU_seam", "precision", "recall")])
    written["csv"] = str(sidecar(out, "_per_class.csv"))
    atomic_write_bytes(written["csv"], buf.getvalue().encode())
    if "curve" in res:
        c = res["curve"]
        written["curve_png"] = plot_curve(c["thresholds"], c["mIoU_seam"], sidecar(out, "_curve.png"),
                                          best_index=c["best"]["index"], ylabel="mIoU, SEAM (%)",
                                          extra={"mIoU, present classes (%)": c["mIoU"]},
                                          title=f"{res['num_images']} images, {res['pred_dir']}")
        written["per_class_png"] = plot_per_class(
            res["class_names"], [res["IoU_seam"][n] for n in res["class_names"]],
            sidecar(out, "_per_class.png"), title=f"IoU at background threshold {res['threshold']:g}")
    return written


def overlay_examples(res: dict, ids: Sequence[str], image_dir: Path | None, count: int) -> np.ndarray:
    """Image / GT / prediction grid of the first ``count`` ids (predictions at the reported threshold)."""
    from wsss.viz.overlay import overlay_grid

    pred_dir, gt_dir, n = Path(res["pred_dir"]), Path(res["gt_dir"]), res["num_classes"]
    images, gts, preds = [], [], []
    for name in list(ids)[:count]:
        gt = read_gt(gt_dir / f"{name}.png", n)
        if res["type"] == "png":
            pred = read_png_prediction(pred_dir / f"{name}.png", gt, n)
        else:
            pred = predict_npy(pred_dir / f"{name}.npy", gt, n, res["threshold"])
        img = None
        if image_dir is not None and (image_dir / f"{name}.jpg").is_file():
            img = read_image(image_dir / f"{name}.jpg")
            if img.shape[:2] != gt.shape:
                img = None
        images.append(img)
        gts.append(gt)
        preds.append(pred)
    return overlay_grid(images, gts, preds, max_rows=count)


def log_wandb(logger_cfg, res: dict, written: Dict[str, str], grid: np.ndarray | None) -> None:
    """Curve, per-class table, summary and overlays to the W&B run of ``logger=wandb``."""
    from hydra.utils import instantiate
    from pytorch_lightning.loggers import WandbLogger

    loggers = [instantiate(c) for c in (logger_cfg or {}).values() if c is not None]
    wandb_loggers = [lg for lg in loggers if isinstance(lg, WandbLogger)]
    if not wandb_loggers:
        return
    import wandb

    run = wandb_loggers[0].experiment
    table = wandb.Table(columns=["class", "IoU", "IoU_seam", "precision", "recall"])
    for name in res["class_names"]:
        table.add_data(name, res["IoU"][name], res["IoU_seam"][name], res["precision"][name], res["recall"][name])
    payload = {"eval/mIoU": res["mIoU"], "eval/mIoU_seam": res["mIoU_seam"], "eval/pixel_acc": res["pixel_acc"],
               "eval/per_class": table}
    if "curve" in res:
        c = res["curve"]
        curve_table = wandb.Table(columns=["threshold", "mIoU_seam", "mIoU"],
                                  data=[list(r) for r in zip(c["thresholds"], c["mIoU_seam"], c["mIoU"])])
        payload["eval/curve"] = wandb.plot.line(curve_table, "threshold", "mIoU_seam",
                                                title="mIoU vs background threshold")
        payload["eval/curve_table"] = curve_table
        payload["eval/curve_plot"] = wandb.Image(written["curve_png"])
        payload["eval/per_class_plot"] = wandb.Image(written["per_class_png"])
        payload["eval/best_threshold"] = c["best"]["threshold"]
    if grid is not None:
        payload["eval/overlays"] = wandb.Image(grid, caption="image | GT | prediction")
    run.log(payload)
    for key in ("mIoU", "mIoU_seam", "threshold"):
        if res.get(key) is not None:
            run.summary[f"eval/{key}"] = res[key]
    wandb.finish()


# ----- entry point ---------------------------------------------------------------------------
def class_config(cfg) -> tuple[int, list[str]]:
    """``num_classes`` / ``class_names`` from the dataset group, VOC's 21 when absent."""
    ds = cfg.get("dataset") or {}
    names = ds.get("class_names")
    num = ds.get("num_classes")
    if names is None:
        names = list(VOC_CLASSES) if num in (None, len(VOC_CLASSES)) else [str(i) for i in range(num)]
    names = [str(n) for n in names]
    if num is not None and int(num) != len(names):
        raise ValueError(f"dataset.num_classes={num} but dataset.class_names has {len(names)} entries")
    return len(names), names


def check_class_names_file(gt_dir: Path, names: Sequence[str]) -> None:
    """A data set written with ``class_names.txt`` (e.g. the synthetic one) must match the config."""
    path = gt_dir.parent / "class_names.txt"
    if not path.is_file():
        return
    listed = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if listed != list(names):
        raise ValueError(f"{path} lists {len(listed)} classes {listed[:6]}... but the evaluation uses "
                         f"{len(names)} {list(names)[:6]}...; pick the matching config, e.g. dataset=synthetic")


def run(cfg) -> dict:
    """The CLI without Hydra's decorator (callable from tests and other entry points)."""
    for key in ("pred_dir", "gt_dir", "list"):
        if cfg.get(key) in (None, "", "???"):
            raise ValueError(f"{key}=... is required: python -m wsss.evaluate pred_dir=DIR "
                             "gt_dir=ROOT/SegmentationClass list=LIST type=npy|png")
    num_classes, names = class_config(cfg)
    gt_dir = Path(cfg["gt_dir"])
    check_class_names_file(gt_dir, names)
    ids = read_split_list(cfg["list"])
    curve = bool(cfg.get("curve", False))
    thresholds = cfg.get("curve_thresholds") if curve else None
    if curve and not thresholds:
        thresholds = default_thresholds()
    if curve and cfg["type"] != "npy":
        raise ValueError("curve=true needs type=npy score files (PNG predictions have no scores)")
    res = evaluate_dir(cfg["pred_dir"], gt_dir, ids, type=cfg["type"], num_classes=num_classes,
                       class_names=names, threshold=cfg.get("threshold"),
                       curve_thresholds=list(thresholds) if thresholds else None,
                       workers=int(cfg.get("workers", 1)), progress=bool(cfg.get("progress", True)))
    res["list"] = str(cfg["list"])
    if "curve" in res:
        print(format_curve(res), flush=True)
    print(format_table(res), flush=True)
    out = Path(cfg["out"])
    written = write_outputs(res, out)
    print("wrote " + ", ".join(written.values()), flush=True)
    logger_cfg = cfg.get("logger")
    if logger_cfg:
        image_dir = cfg.get("image_dir")
        image_dir = Path(image_dir) if image_dir else gt_dir.parent / "JPEGImages"
        count = int(cfg.get("overlay_count", 8))
        grid = overlay_examples(res, ids, image_dir if image_dir.is_dir() else None, count) if count > 0 else None
        log_wandb(logger_cfg, res, written, grid)
    return res


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
def main(cfg: DictConfig) -> float:
    return run(cfg)["mIoU_seam"]


if __name__ == "__main__":
    main()
