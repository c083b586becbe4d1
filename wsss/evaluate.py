"""``python -m wsss.evaluate``: mIoU of a prediction folder against GT, optionally over bg thresholds.

    python -m wsss.evaluate pred_dir=DIR gt_dir=ROOT/SegmentationClass list=LIST type=npy|png \
        [threshold=0.2] [curve=true] [curve_thresholds=seam|auto|[...]] [out_dir=DIR] [out=FILE.json] \
        [workers=N] [logger=wandb]

``type=png``: label PNGs (``P`` or ``L``; 255 in a prediction is "no label" and counts as a miss).
``type=npy``: SEAM score dicts ``{fg index k: HxW}`` for class ``k+1``; the background is a constant
plane at ``threshold``, or, with ``curve=true``, the best of every threshold of ``curve_thresholds``
(``seam`` = 0.00..0.59, ``auto`` = 0.00..1.00, or a list), all from one pass over the files. A best
threshold at the edge of the range is warned about (the optimum may lie outside it).

Numbers (:mod:`wsss.metrics.folders`) equal YudeWang/SEAM ``evaluation.py`` (``mIoU_seam``) and are also
given over present classes (``mIoU``), as fractions named ``<split>/<metric>`` where split is the list
file's stem (``val/mIoU`` for ``.../val.txt``; :mod:`wsss.reporting`). The last line printed is
``<split>/mIoU=0.XXXX``. Everything goes to the output folder (``out_dir``, else the run dir;
:mod:`wsss.outputs`): ``evaluate.log``, ``config.yaml`` (the settings used), the metrics JSON (``out``,
default ``metrics.json`` there), a per-class CSV and, with the curve, ``*_curve.png`` and
``*_per_class.png`` beside the JSON.
"""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Dict, Sequence

import hydra
import numpy as np
from omegaconf import DictConfig

from wsss.classes import check_class_names_file, class_config  # noqa: F401 (class_config: used by callers)
from wsss.data.formats import atomic_write_bytes, read_image, read_split_list
from wsss.metrics.curve import resolve_thresholds
from wsss.metrics.folders import evaluate_dir, predict_npy, read_gt, read_png_prediction
from wsss.outputs import check_writable, log_errors, output_dir, write_effective_config
from wsss.paths import config_dir
from wsss.reporting import (background_protocol, echo, fmt, format_table, metrics_record, named_metrics, protocol,
                            value_line, warn, write_metrics)

log = logging.getLogger("wsss.evaluate")  # not __main__ under python -m


# ----- reporting -----------------------------------------------------------------------------
def threshold_note(res: dict) -> str:
    if res.get("threshold") is None:
        return ""
    how = " (the curve's best)" if "curve" in res and res.get("threshold_chosen") == "curve" else ""
    return f"at background threshold {res['threshold']:g}{how}"


def format_curve(res: dict, split: str) -> str:
    c = res["curve"]
    lines = [f"background threshold {t:.3f}  {split}/mIoU_seam={s:.4f}  {split}/mIoU={p:.4f}"
             for t, s, p in zip(c["thresholds"], c["mIoU_seam"], c["mIoU"])]
    b = c["best"]
    lines.append(f"best background threshold {b['threshold']:g} of {min(c['thresholds']):g}..{max(c['thresholds']):g}"
                 f": {split}/mIoU_seam={fmt(b['mIoU_seam'])}  {split}/mIoU={fmt(b['mIoU'])}")
    return "\n".join(lines)


def evaluation_record(res: dict, split: str) -> dict:
    """``res`` in the schema of :func:`wsss.reporting.metrics_record` (one writer for every tool)."""
    bg = None
    if res["type"] == "npy":
        chosen = res.get("threshold_chosen", "fixed")
        if chosen == "curve":
            t = res["curve"]["thresholds"]
            source = f"best mIoU_seam of {len(t)} thresholds {min(t):g}..{max(t):g}"
        else:
            source = "threshold="
        bg = background_protocol("threshold", res["threshold"], chosen=chosen, source=source)
    details = {k: res[k] for k in ("type", "threshold", "curve", "confusion", "unlabelled") if k in res}
    return metrics_record("evaluate", split, protocol(background=bg), named_metrics(res, split),
                          num_images=res["num_images"], num_scored=res["num_images"], class_names=res["class_names"],
                          inputs={"pred_dir": res["pred_dir"], "gt_dir": res["gt_dir"], "list": res.get("list")},
                          details=details)


def sidecar(out: Path, suffix: str) -> Path:
    return out.with_name(out.stem + suffix)


def write_outputs(res: dict, record: dict, out: Path) -> Dict[str, str]:
    """The metrics JSON (``record``), per-class CSV and (with a curve) the curve and per-class plots."""
    from wsss.viz.plots import plot_curve, plot_per_class

    written = {"json": str(write_metrics(out, record))}
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
    split = res["split"]
    payload = {f"{split}/mIoU": res["mIoU"], f"{split}/mIoU_seam": res["mIoU_seam"],
               f"{split}/pixel_acc": res["pixel_acc"], f"{split}/per_class": table}
    if "curve" in res:
        c = res["curve"]
        curve_table = wandb.Table(columns=["threshold", "mIoU_seam", "mIoU"],
                                  data=[list(r) for r in zip(c["thresholds"], c["mIoU_seam"], c["mIoU"])])
        payload[f"{split}/curve"] = wandb.plot.line(curve_table, "threshold", "mIoU_seam",
                                                    title="mIoU vs background threshold")
        payload[f"{split}/curve_table"] = curve_table
        payload[f"{split}/curve_plot"] = wandb.Image(written["curve_png"])
        payload[f"{split}/per_class_plot"] = wandb.Image(written["per_class_png"])
        payload[f"{split}/best_threshold"] = c["best"]["threshold"]
    if grid is not None:
        payload[f"{split}/overlays"] = wandb.Image(grid, caption="image | GT | prediction")
    run.log(payload)
    for key in ("mIoU", "mIoU_seam", "threshold"):
        if res.get(key) is not None:
            run.summary[f"{split}/{key}"] = res[key]
    wandb.finish()


# ----- entry point ---------------------------------------------------------------------------
def run(cfg) -> dict:
    """The CLI without Hydra's decorator (callable from tests and other entry points)."""
    for key in ("pred_dir", "gt_dir", "list"):
        if cfg.get(key) in (None, "", "???"):
            raise ValueError(f"{key}=... is required: python -m wsss.evaluate pred_dir=DIR "
                             "gt_dir=ROOT/SegmentationClass list=LIST type=npy|png")
    num_classes, names = class_config(cfg)
    gt_dir = Path(cfg["gt_dir"])
    check_class_names_file(gt_dir.parent, names)
    ids = read_split_list(cfg["list"])
    split = Path(str(cfg["list"])).stem
    curve = bool(cfg.get("curve", False))
    if curve and cfg["type"] != "npy":
        raise ValueError("curve=true needs type=npy score files (PNG predictions have no scores)")
    thresholds = resolve_thresholds(cfg.get("curve_thresholds") or "seam") if curve else None
    has_folder = cfg.get("out_dir") or cfg.get("paths") is not None or not cfg.get("out")
    out_dir = output_dir(cfg) if has_folder else Path(str(cfg["out"])).expanduser().parent
    check_writable(out_dir)
    out = Path(str(cfg["out"])).expanduser() if cfg.get("out") else out_dir / "metrics.json"
    res = evaluate_dir(cfg["pred_dir"], gt_dir, ids, type=cfg["type"], num_classes=num_classes,
                       class_names=names, threshold=cfg.get("threshold"), curve_thresholds=thresholds,
                       workers=int(cfg.get("workers", 1)), progress=bool(cfg.get("progress", True)))
    res.update(list=str(cfg["list"]), split=split, threshold_chosen="fixed" if cfg.get("threshold") is not None
               else "curve")
    if "curve" in res:
        echo(format_curve(res, split), logger=log)
    echo(format_table(res, split, threshold_note(res)), logger=log)
    if res.get("curve", {}).get("warning"):
        warn(res["curve"]["warning"], logger=log)
    written = write_outputs(res, evaluation_record(res, split), out)
    effective = {"out_dir": str(out_dir), "out": str(out), "curve_thresholds": thresholds, "split": split,
                 "dataset.num_classes": num_classes, "dataset.class_names": names,
                 "threshold": res.get("threshold") if res["type"] == "npy" else None}
    written["config"] = str(write_effective_config(out_dir, cfg, effective))
    echo("wrote " + ", ".join(written.values()), logger=log)
    logger_cfg = cfg.get("logger")
    if logger_cfg:
        image_dir = cfg.get("image_dir")
        image_dir = Path(image_dir) if image_dir else gt_dir.parent / "JPEGImages"
        count = int(cfg.get("overlay_count", 8))
        grid = overlay_examples(res, ids, image_dir if image_dir.is_dir() else None, count) if count > 0 else None
        log_wandb(logger_cfg, res, written, grid)
    echo(value_line(f"{split}/mIoU", res["mIoU"]), logger=log)
    return res


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
def main(cfg: DictConfig) -> float:
    with log_errors(log):
        return run(cfg)["mIoU"]


if __name__ == "__main__":
    main()
