"""A background threshold chosen without the reported split's ground truth.

The seed repos pick the threshold as the best of the curve on the very split they report (an oracle: the
number is optimistic by however much the best threshold fits that split's GT). Here the threshold maximises
SEAM's mIoU on a disjoint calibration list (e.g. 100 labelled train images, the protocol of wsolevaluation),
and the reported split is scored at it; its own best (the oracle) is reported beside it, with the gap.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from wsss.metrics.folders import evaluate_dir


def check_disjoint(ids: Sequence[str], calib_ids: Sequence[str], list_file, calib_file) -> None:
    """A calibration list that shares images with the reported list would leak its GT into the threshold."""
    shared = sorted(set(ids) & set(calib_ids))
    if shared:
        shown = ", ".join(shared[:10]) + (f", ... ({len(shared)} in all)" if len(shared) > 10 else "")
        raise ValueError(f"calib_list={calib_file} shares {len(shared)} ids with list={list_file}: {shown}; the "
                         "calibration images must be disjoint from the reported ones (e.g. 100 train images for val)")


def calibration_inputs(cfg, ids: Sequence[str], thresholds) -> dict | None:
    """``calib_list`` (with ``calib_gt_dir`` / ``calib_pred_dir``, default ``gt_dir`` / ``pred_dir``) checked
    against the run's settings; None without ``calib_list``."""
    from wsss.data.formats import read_split_list

    calib_list = cfg.get("calib_list")
    if not calib_list:
        return None
    if cfg["type"] != "npy" or thresholds is None:
        raise ValueError("calib_list= picks a threshold from the curve: it needs type=npy and curve=true")
    if cfg.get("threshold") is not None:
        raise ValueError(f"calib_list= chooses the threshold; drop threshold={cfg.get('threshold')}")
    calib_ids = read_split_list(calib_list)
    check_disjoint(ids, calib_ids, cfg["list"], calib_list)
    return {"list": str(calib_list), "ids": calib_ids, "gt_dir": str(cfg.get("calib_gt_dir") or cfg["gt_dir"]),
            "pred_dir": str(cfg.get("calib_pred_dir") or cfg["pred_dir"])}


def calibrate(calib_pred_dir, calib_gt_dir, calib_ids: Sequence[str], thresholds: Sequence[float],
              num_classes: int, class_names: Sequence[str], workers: int = 1, progress: bool = False) -> dict:
    """The best threshold of the curve on the calibration images: ``{"threshold", "mIoU_seam", "mIoU",
    "num_images", "warning"}`` (values on the calibration images)."""
    res = evaluate_dir(calib_pred_dir, calib_gt_dir, calib_ids, type="npy", num_classes=num_classes,
                       class_names=class_names, curve_thresholds=thresholds, workers=workers, progress=progress)
    best = res["curve"]["best"]
    return {"threshold": best["threshold"], "mIoU_seam": best["mIoU_seam"], "mIoU": best["mIoU"],
            "num_images": len(calib_ids), "warning": res["curve"]["warning"]}


def calibrated_result(res: dict, calib: dict, calib_list, calib_gt_dir) -> dict:
    """``res`` (scored at the calibrated threshold, with its own curve) with ``calibrated`` and ``oracle``."""
    best = res["curve"]["best"]
    res["calibrated"] = {"threshold": calib["threshold"], "mIoU_seam": res["mIoU_seam"], "mIoU": res["mIoU"],
                         "calib_list": str(calib_list), "calib_gt_dir": str(Path(calib_gt_dir)),
                         "calib_num_images": calib["num_images"], "calib_mIoU_seam": calib["mIoU_seam"]}
    res["oracle"] = {"threshold": best["threshold"], "mIoU_seam": best["mIoU_seam"], "mIoU": best["mIoU"]}
    res["threshold_chosen"] = "calibrated"
    return res


def format_calibration(res: dict, split: str) -> str:
    """Calibrated and oracle thresholds with their numbers on ``split`` and the gap."""
    c, o = res["calibrated"], res["oracle"]
    gap = o["mIoU_seam"] - c["mIoU_seam"]
    return "\n".join([
        f"calibrated background threshold {c['threshold']:g} (best on {c['calib_num_images']} images of "
        f"{Path(c['calib_list']).name}): {split}/mIoU_seam={c['mIoU_seam']:.4f}  {split}/mIoU={c['mIoU']:.4f}",
        f"oracle background threshold {o['threshold']:g} (best on {split}'s own GT, as the seed repos report): "
        f"{split}/mIoU_seam={o['mIoU_seam']:.4f}  {split}/mIoU={o['mIoU']:.4f}",
        f"oracle - calibrated: {gap:+.4f} mIoU_seam"])
