"""Metric plots written as PNG files.

Uses matplotlib's object API with the Agg canvas, never ``pyplot``, so importing
this module neither needs a display nor changes the backend of the caller.
"""
from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from wsss.data.formats import atomic_write_bytes


def _save(fig: Figure, path: str | os.PathLike) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


def plot_curve(thresholds: Sequence[float], values: Sequence[float], path: str | os.PathLike,
               best_index: int | None = None, ylabel: str = "mIoU (%)", title: str | None = None,
               extra: dict[str, Sequence[float]] | None = None, marks: dict[str, int] | None = None,
               best_label: str = "best") -> str:
    """mIoU against background threshold, with the best point marked and labelled.

    ``values`` are fractions (0..1) and are drawn in percent; ``extra`` adds
    further named curves (e.g. the other mIoU convention) as dashed lines; ``marks`` labels other chosen
    thresholds by index (e.g. the one calibrated on other images).
    """
    t = np.asarray(thresholds, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    v = 100.0 * np.asarray(values, dtype=np.float64)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(t[order], v[order], marker=".", label=ylabel)
    for name, other in (extra or {}).items():
        ax.plot(t[order], 100.0 * np.asarray(other, dtype=np.float64)[order], linestyle="--", label=name)
    if best_index is not None:
        bt, bv = t[best_index], v[best_index]
        ax.plot([bt], [bv], marker="*", markersize=14, color="tab:red", linestyle="none",
                label=f"{best_label}: t={bt:.3f}, {bv:.2f}")
        ax.axvline(bt, color="tab:red", linewidth=0.8, alpha=0.5)
    for (name, index), colour in zip((marks or {}).items(), ("tab:green", "tab:purple", "tab:orange")):
        ax.plot([t[index]], [v[index]], marker="D", markersize=8, color=colour, linestyle="none",
                label=f"{name}: t={t[index]:.3f}, {v[index]:.2f}")
        ax.axvline(t[index], color=colour, linewidth=0.8, alpha=0.5, linestyle=":")
    ax.set_xlabel("background threshold")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_per_class(names: Sequence[str], ious: Sequence[float | None], path: str | os.PathLike,
                   title: str | None = None) -> str:
    """Horizontal bar chart of per-class IoU (fractions, drawn in percent); None bars are empty."""
    vals = np.array([np.nan if x is None else 100.0 * float(x) for x in ious], dtype=np.float64)
    mean = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    fig = Figure(figsize=(6, 0.28 * len(names) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(names))
    ax.barh(y, np.nan_to_num(vals), color="tab:blue")
    for yi, val in zip(y, vals):
        ax.text((0 if np.isnan(val) else val) + 0.5, yi, "n/a" if np.isnan(val) else f"{val:.1f}",
                va="center", fontsize=7)
    if np.isfinite(mean):
        ax.axvline(mean, color="tab:red", linewidth=1, label=f"mean {mean:.2f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(list(names), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel("IoU (%)")
    if title:
        ax.set_title(title)
    return _save(fig, path)
