"""The W&B side of ``wsss.evaluate logger=wandb``: curve, per-class table, summary and overlay examples."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

import numpy as np

from wsss.data.formats import read_image
from wsss.evaluation.examples import prediction_of
from wsss.metrics.folders import read_gt


def overlay_examples(res: dict, ids: Sequence[str], image_dir: Path | None, count: int) -> np.ndarray:
    """Image / GT / prediction grid of the first ``count`` ids (predictions at the reported threshold)."""
    from wsss.viz.overlay import overlay_grid

    pred_dir, gt_dir, n = Path(res["pred_dir"]), Path(res["gt_dir"]), res["num_classes"]
    images, gts, preds = [], [], []
    for name in list(ids)[:count]:
        gt = read_gt(gt_dir / f"{name}.png", n)
        pred = prediction_of(pred_dir, name, gt, res["type"], n, res["threshold"])
        img = None
        if image_dir is not None and (image_dir / f"{name}.jpg").is_file():
            img = read_image(image_dir / f"{name}.jpg")
            if img.shape[:2] != gt.shape:
                img = None
        images.append(img)
        gts.append(gt)
        preds.append(pred)
    return overlay_grid(images, gts, preds, max_rows=count)


def log_wandb(logger_cfg, res: dict, written: Dict[str, str], grid: np.ndarray | None,
              examples: dict | None = None, record: dict | None = None) -> None:
    """Curve, per-class table, summary, overlays and worst / best panels to the W&B run of ``logger=wandb``."""
    from wsss.tool_wandb import open_run, panel_images, per_class_table

    run = open_run(logger_cfg, record, [f"split={res['split']}"])
    if run is None:
        return
    import wandb

    split = res["split"]
    payload = {f"{split}/mIoU": res["mIoU"], f"{split}/mIoU_seam": res["mIoU_seam"],
               f"{split}/pixel_acc": res["pixel_acc"], f"{split}/per_class": per_class_table(res)}
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
    payload.update({f"{split}/{k}": v for k, v in panel_images(examples).items()})  # overlays=N
    run.log(payload)
    for key in ("mIoU", "mIoU_seam", "threshold"):
        if res.get(key) is not None:
            run.summary[f"{split}/{key}"] = res[key]
    wandb.finish()
