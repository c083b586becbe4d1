"""One ``wsss.evaluate`` run from its config: checks, the one-pass evaluation, report, files, W&B."""
from __future__ import annotations

import logging
from pathlib import Path

from wsss.classes import check_class_names_file, class_config
from wsss.data.formats import read_split_list
from wsss.evaluation.calibration import calibrate, calibrated_result, calibration_inputs, format_calibration
from wsss.evaluation.examples import write_examples
from wsss.evaluation.dashboard import log_wandb, overlay_examples
from wsss.evaluation.report import evaluation_record, format_curve, threshold_note, write_outputs
from wsss.metrics.curve import resolve_thresholds
from wsss.metrics.folders import evaluate_dir
from wsss.outputs import check_writable, output_dir, write_effective_config
from wsss.provenance import RunRecord
from wsss.reporting import echo, format_table, value_line, warn

log = logging.getLogger("wsss.evaluate")  # not __main__ under python -m


def default_image_dir(gt_dir: Path) -> Path:
    """The images beside a GT folder: VOC's ``JPEGImages``, or COCO's ``images/val2014`` for
    ``SegmentationClass/val2014``."""
    voc, coco = gt_dir.parent / "JPEGImages", gt_dir.parent.parent / "images" / gt_dir.name
    return coco if not voc.is_dir() and coco.is_dir() else voc


def run(cfg) -> dict:
    """The CLI without Hydra's decorator (callable from tests and other entry points)."""
    for key in ("pred_dir", "gt_dir", "list"):
        if cfg.get(key) in (None, "", "???"):
            raise ValueError(f"{key}=... is required: python -m wsss.evaluate pred_dir=DIR "
                             "gt_dir=ROOT/SegmentationClass list=LIST type=npy|png")
    num_classes, names = class_config(cfg)
    gt_dir = Path(cfg["gt_dir"])
    # the data root's class_names.txt: beside the GT folder (VOC), or one level up (COCO's SegmentationClass/val2014)
    root = next((d for d in (gt_dir.parent, gt_dir.parent.parent) if (d / "class_names.txt").is_file()), gt_dir.parent)
    check_class_names_file(root, names)
    ids = read_split_list(cfg["list"])
    split = Path(str(cfg["list"])).stem
    curve = bool(cfg.get("curve", False))
    if curve and cfg["type"] != "npy":
        raise ValueError("curve=true needs type=npy score files (PNG predictions have no scores)")
    thresholds = resolve_thresholds(cfg.get("curve_thresholds") or "seam") if curve else None
    has_folder = cfg.get("out_dir") or cfg.get("paths") is not None or not cfg.get("out")
    out_dir = output_dir(cfg) if has_folder else Path(str(cfg["out"])).expanduser().parent
    check_writable(out_dir)
    record = RunRecord.start_tool(out_dir, "evaluate", details={
        "pred_dir": str(cfg["pred_dir"]), "gt_dir": str(gt_dir), "list": str(cfg["list"]), "type": str(cfg["type"])})
    out = Path(str(cfg["out"])).expanduser() if cfg.get("out") else out_dir / "metrics.json"
    calib, threshold = calibration_inputs(cfg, ids, thresholds), cfg.get("threshold")
    workers, progress = int(cfg.get("workers", 1)), bool(cfg.get("progress", True))
    if calib is not None:
        found = calibrate(calib["pred_dir"], calib["gt_dir"], calib["ids"], thresholds, num_classes, names,
                          workers, progress)
        threshold = found["threshold"]
        if found["warning"]:
            warn(f"calibration on {calib['list']}: {found['warning']}", logger=log)
    res = evaluate_dir(cfg["pred_dir"], gt_dir, ids, type=cfg["type"], num_classes=num_classes,
                       class_names=names, threshold=threshold, curve_thresholds=thresholds,
                       workers=workers, progress=progress)
    res.update(list=str(cfg["list"]), split=split, threshold_chosen="fixed" if threshold is not None else "curve")
    if calib is not None:
        calibrated_result(res, found, calib["list"], calib["gt_dir"])
    if "curve" in res:
        echo(format_curve(res, split), logger=log)
    if calib is not None:
        echo(format_calibration(res, split), logger=log)
    echo(format_table(res, split, threshold_note(res)), logger=log)
    if res.get("curve", {}).get("warning"):
        warn(res["curve"]["warning"], logger=log)
    written = write_outputs(res, evaluation_record(res, split), out)
    effective = {"out_dir": str(out_dir), "out": str(out), "curve_thresholds": thresholds, "split": split,
                 "dataset.num_classes": num_classes, "dataset.class_names": names,
                 "threshold": res.get("threshold") if res["type"] == "npy" else None}
    examples = None
    if int(cfg.get("overlays") or 0) > 0:
        image_dir = Path(str(cfg.get("image_dir") or default_image_dir(gt_dir)))
        examples = write_examples(out_dir, ids, Path(str(cfg["pred_dir"])), gt_dir, str(cfg["type"]), num_classes,
                                  names, int(cfg.overlays), res.get("threshold"),
                                  image_of={i: image_dir / f"{i}.jpg" for i in ids},
                                  scores_dir=Path(str(cfg["pred_dir"])) if cfg["type"] == "npy" else None)
        written["per_image"] = examples["csv"]
        written["overlays"] = str(out_dir / "overlays")
    written["config"] = str(write_effective_config(out_dir, cfg, effective))
    echo("wrote " + ", ".join(written.values()), logger=log)
    record.finish(threshold=res.get("threshold"), threshold_chosen=res.get("threshold_chosen"), metrics_file=str(out))
    logger_cfg = cfg.get("logger")
    if logger_cfg:
        image_dir = cfg.get("image_dir")
        image_dir = Path(image_dir) if image_dir else default_image_dir(gt_dir)
        count = int(cfg.get("overlay_count", 8))
        grid = overlay_examples(res, ids, image_dir if image_dir.is_dir() else None, count) if count > 0 else None
        log_wandb(logger_cfg, res, written, grid, examples, record.record)
    echo(value_line(f"{split}/mIoU", res["mIoU"]), logger=log)
    return res
