"""One naming scheme, one unit and one ``metrics.json`` for ``wsss.infer``, ``wsss.evaluate`` and
``wsss.pseudo_label`` (and names compatible with ``wsss.train``'s ``val/mIoU``).

Why: the tools used to print percentages as ``pred/mIoU`` while training printed fractions as ``val/mIoU``,
so numbers could not be compared at a glance.

* Units: fractions 0..1 everywhere; printed with 4 decimals; stored in JSON at full precision.
* Names: ``<split>/<metric>``, where split is what was scored: the ``split=`` of infer and pseudo_label, the
  list file's stem for evaluate (``.../val.txt`` -> ``val``). A second output of the same split adds its
  kind: infer's CRF labels are ``<split>/crf/<metric>``. Metrics: ``mIoU`` (mean over the classes present in
  GT or prediction), ``mIoU_seam`` (SEAM's mean over all classes), ``pixel_acc``, and per class ``IoU``,
  ``IoU_seam``, ``precision``, ``recall``.
* The last line a tool prints is its main number, ``<name>=0.XXXX`` (e.g. ``val/mIoU=0.6123``).
* ``metrics.json`` (:func:`metrics_record`): ``schema``, ``tool``, ``split``, ``protocol`` (scales, flip,
  resize, crf, background: rule, threshold, alpha, ``chosen`` = fixed | curve | calibrated | learned, source),
  ``num_images``, ``num_scored``, ``class_names``, ``inputs`` (the folders read), every metric as a
  top-level ``<split>/...`` key (as train's file), and tool-specific ``details`` (curve, confusion).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

from wsss.data.formats import atomic_write_bytes
from wsss.outputs import to_log_file

log = logging.getLogger(__name__)

SCHEMA = "wsss.metrics/1"
SCALARS = ("mIoU", "mIoU_seam", "pixel_acc")
PER_CLASS = ("IoU", "IoU_seam", "precision", "recall")


def metric_name(split: str, metric: str, output: Optional[str] = None) -> str:
    """``val/mIoU``; with ``output`` (a second output of the split): ``val/crf/mIoU``."""
    return "/".join(p for p in (split, output, metric) if p)


def named_metrics(res: Mapping, split: str, output: Optional[str] = None) -> Dict[str, object]:
    """The metrics of one result dict (plain keys) under their ``<split>/...`` names."""
    return {metric_name(split, k, output): res[k] for k in SCALARS + PER_CLASS if k in res}


def background_protocol(rule: Optional[str], threshold=None, alpha=None, chosen: str = "fixed",
                        source: str = "") -> dict:
    """How the background was decided: ``chosen`` is ``fixed`` (a given threshold / rule), ``curve`` (the best
    of the threshold curve), ``calibrated`` (the best on other images, ``calib_list``) or ``learned`` (the
    network predicts it)."""
    return {"rule": rule, "threshold": None if rule != "threshold" else threshold,
            "alpha": None if rule != "power" else alpha, "chosen": chosen, "source": source}


def protocol(scales=None, flip=None, resize=None, crf: Optional[str] = None, background: Optional[dict] = None) -> dict:
    """The inference / labelling protocol behind the numbers (null where the tool cannot know it)."""
    return {"scales": None if scales is None else [float(s) for s in scales], "flip": flip, "resize": resize,
            "crf": crf, "background": background}


def metrics_record(tool: str, split: str, proto: dict, metrics: Mapping, *, num_images: int, num_scored: int,
                   class_names: Sequence[str], inputs: Mapping, details: Optional[Mapping] = None) -> dict:
    """The one ``metrics.json`` schema of the post-training tools."""
    record = {"schema": SCHEMA, "tool": tool, "split": split, "protocol": proto, "num_images": int(num_images),
              "num_scored": int(num_scored), "class_names": list(class_names),
              "inputs": {k: (None if v is None else str(v)) for k, v in inputs.items()}}
    record.update(metrics)
    record["details"] = dict(details or {})
    return record


def write_metrics(path, record: Mapping) -> Path:
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(record, indent=1) + "\n").encode())
    return path


# ----- printing ------------------------------------------------------------------------------
def fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def value_line(name: str, value, note: str = "") -> str:
    return f"{name}={fmt(value)}" + (f"  ({note})" if note else "")


def format_table(res: Mapping, prefix: str, note: str = "") -> str:
    """Per-class IoU (both conventions), precision, recall, then the summary lines, as fractions."""
    names = list(res["class_names"])
    width = max(11, max(len(n) for n in names))
    lines = [f"{'class':>{width}}     IoU  IoU_seam  precision  recall"]
    for n in names:
        lines.append(f"{n:>{width}}  {fmt(res['IoU'][n]):>6}    {fmt(res['IoU_seam'][n]):>6}     "
                     f"{fmt(res['precision'][n]):>6}  {fmt(res['recall'][n]):>6}")
    lines.append("=" * len(lines[0]))
    at = f", {note}" if note else ""
    lines.append(value_line(f"{prefix}/mIoU_seam", res["mIoU_seam"], f"SEAM: mean over all {len(names)} classes{at}"))
    lines.append(value_line(f"{prefix}/pixel_acc", res.get("pixel_acc")))
    lines.append(value_line(f"{prefix}/mIoU", res["mIoU"], "mean over the classes present in GT or prediction"))
    return "\n".join(lines)


def echo(text: str, level: int = logging.INFO, logger: logging.Logger | None = None) -> None:
    """Print to stdout and write the same text to the run's log file (not again to the console), under
    ``logger``'s name (the tool's, e.g. ``wsss.evaluate``)."""
    print(text, flush=True)
    to_log_file(logger or log, level, text)


def warn(text: str, logger: logging.Logger | None = None) -> None:
    echo(f"WARNING: {text}", logging.WARNING, logger)
