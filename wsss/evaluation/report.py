"""What ``wsss.evaluate`` prints and writes: the curve table, the metrics record (the one schema of
:mod:`wsss.reporting`), the per-class CSV and the curve / per-class plots."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict

from wsss.data.formats import atomic_write_bytes
from wsss.reporting import background_protocol, fmt, metrics_record, named_metrics, protocol, write_metrics


def threshold_note(res: dict) -> str:
    if res.get("threshold") is None:
        return ""
    how = {"curve": " (the curve's best)", "fixed": ""}.get(res.get("threshold_chosen"), "")
    if res.get("threshold_chosen") == "calibrated":
        how = f" (calibrated on {Path(res['calibrated']['calib_list']).name})"
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
        if chosen == "calibrated":
            c = res["calibrated"]
            source = f"best mIoU_seam on calib_list {c['calib_list']} ({c['calib_num_images']} images)"
        elif chosen == "curve":
            t = res["curve"]["thresholds"]
            source = f"best mIoU_seam of {len(t)} thresholds {min(t):g}..{max(t):g}"
        else:
            source = "threshold="
        bg = background_protocol("threshold", res["threshold"], chosen=chosen, source=source)
    details = {k: res[k] for k in ("type", "threshold", "curve", "confusion", "unlabelled") if k in res}
    record = metrics_record("evaluate", split, protocol(background=bg), named_metrics(res, split),
                            num_images=res["num_images"], num_scored=res["num_images"], class_names=res["class_names"],
                            inputs={"pred_dir": res["pred_dir"], "gt_dir": res["gt_dir"], "list": res.get("list")},
                            details=details)
    for key in ("calibrated", "oracle"):  # calib_list=: the threshold from other images, and this split's own best
        if key in res:
            record[key] = res[key]
    return record


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
        marks = {}
        if "calibrated" in res:
            marks[f"calibrated on {Path(res['calibrated']['calib_list']).name}"] = \
                c["thresholds"].index(res["calibrated"]["threshold"])
        written["curve_png"] = plot_curve(c["thresholds"], c["mIoU_seam"], sidecar(out, "_curve.png"),
                                          best_index=c["best"]["index"], ylabel="mIoU, SEAM (%)", marks=marks,
                                          best_label="oracle" if marks else "best",
                                          extra={"mIoU, present classes (%)": c["mIoU"]},
                                          title=f"{res['num_images']} images, {res['pred_dir']}")
        written["per_class_png"] = plot_per_class(
            res["class_names"], [res["IoU_seam"][n] for n in res["class_names"]],
            sidecar(out, "_per_class.png"), title=f"IoU at background threshold {res['threshold']:g}")
    return written
