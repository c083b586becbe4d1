"""Completion records of pipeline stages and the report built from the stages' own ``metrics.json`` files.

``RUN/<stage>/stage.json`` is written atomically when a stage's command exits 0: its command line (minus
resume arguments) and wall time. A rerun skips a stage whose record holds the same command; a record with
another command stops the run, naming both, because the outputs on disk belong to other settings.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List, Optional

from wsss.data.formats import atomic_write_bytes

RECORD = "stage.json"


def record_path(run_dir: Path, stage: str) -> Path:
    return run_dir / stage / RECORD


def read_record(run_dir: Path, stage: str) -> Optional[dict]:
    path = record_path(run_dir, stage)
    return json.loads(path.read_text()) if path.is_file() else None


def write_record(run_dir: Path, stage: str, argv: List[str], wall_s: float, note: str = "") -> dict:
    record = {"stage": stage, "status": "done", "argv": list(argv), "wall_s": round(float(wall_s), 3),
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "note": note}
    atomic_write_bytes(record_path(run_dir, stage), (json.dumps(record, indent=2) + "\n").encode())
    return record


def check_same_command(record: dict, argv: List[str], run_dir: Path) -> None:
    if record["argv"] != list(argv):
        old, new = set(record["argv"]), set(argv)
        raise ValueError(f"{record_path(run_dir, record['stage'])}: stage '{record['stage']}' finished with other "
                         f"settings (only before: {sorted(old - new)}; only now: {sorted(new - old)}); use another "
                         f"out_dir, or delete {run_dir / record['stage']} and the stages after it to redo them")


def _metrics(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _row(name: str, record: dict, prefix: str, protocol: Optional[dict], note: str = "") -> Optional[dict]:
    if f"{prefix}mIoU" not in record:
        return None
    return {"name": name, "mIoU": record[f"{prefix}mIoU"], "mIoU_seam": record.get(f"{prefix}mIoU_seam"),
            "protocol": protocol, "note": note}


def _with_split(record: dict) -> dict:
    return {"split": record.get("split"), **(record.get("protocol") or {})}


def report_rows(run_dir: Path, cfg) -> List[dict]:
    """One row per number, under an explicit ``<kind>/<split>`` name, with the protocol it was measured under."""
    rows = []
    seed = _metrics(run_dir / "seed" / "metrics.json")
    rows.append(_row("seed/val", seed, "val/", {"split": "val", "scales": [1.0], "flip": False},
                     "the seed training's validation (the method's own background rule and label use)"))
    thr = _metrics(run_dir / "threshold" / "metrics.json")
    if thr:
        split = thr["split"]
        c, o = thr["calibrated"], thr["oracle"]
        rows.append(_row(f"seed/{cfg.threshold.split}", thr, f"{split}/", _with_split(thr),
                         f"threshold {c['threshold']:g} calibrated on {c['calib_num_images']} other images; the "
                         f"oracle (best on these images' own GT) {o['threshold']:g} gives {o['mIoU']:.4f}"))
    pseudo = _metrics(run_dir / "pseudo_label" / "metrics.json")
    if pseudo:
        rows.append(_row(f"pseudo/{pseudo['split']}", pseudo, f"{pseudo['split']}/", _with_split(pseudo),
                         "the calibrated threshold of seed/" + str(cfg.threshold.split) if thr else ""))
    final = _metrics(run_dir / "final" / "metrics.json")
    if final:
        rows.append(_row("seg/val", final, "val/", _with_split(final)))
        rows.append(_row("seg/val+crf", final, "val/crf/", _with_split(final)))
    return [r for r in rows if r is not None]


def _protocol_text(p: Optional[dict]) -> str:
    if not p:
        return ""
    parts = []
    if p.get("split"):
        parts.append(f"split {p['split']}")
    if p.get("scales") is not None:
        parts.append(f"scales {','.join(f'{s:g}' for s in p['scales'])}" + (" + flip" if p.get("flip") else ""))
    if p.get("crf"):
        parts.append(f"CRF {p['crf']}")
    bg = p.get("background") or {}
    if bg.get("rule") == "threshold" and bg.get("threshold") is not None:
        parts.append(f"background {bg['threshold']:g} ({bg.get('chosen')})")
    elif bg.get("rule"):
        parts.append(f"background {bg['rule']}")
    return "; ".join(parts)


def write_report(run_dir: Path, cfg, config_yaml: str) -> Dict[str, Path]:
    """``report.json`` and ``report.md``: every stage's number, its protocol, each stage's wall time, the config."""
    rows = report_rows(run_dir, cfg)
    stages = {}
    for stage in ("seed", "scores", "threshold", "pseudo_label", "second_stage", "final"):
        rec = read_record(run_dir, stage)
        stages[stage] = {"status": rec["status"] if rec else "not run", "wall_s": rec["wall_s"] if rec else None,
                         "note": rec.get("note", "") if rec else ""}
    payload = {"schema": "wsss.pipeline/1", "run_dir": str(run_dir), "rows": rows, "stages": stages}
    lines = ["# wsss pipeline report", "", f"Run folder: `{run_dir}`", "",
             "| number | mIoU | mIoU (SEAM) | protocol | note |", "|---|---|---|---|---|"]
    for r in rows:
        seam = "" if r["mIoU_seam"] is None else f"{r['mIoU_seam']:.4f}"
        lines.append(f"| {r['name']} | {r['mIoU']:.4f} | {seam} | {_protocol_text(r['protocol'])} | {r['note']} |")
    lines += ["", "| stage | status | wall time (s) | note |", "|---|---|---|---|"]
    for stage, s in stages.items():
        wall = "" if s["wall_s"] is None else f"{s['wall_s']:.1f}"
        lines.append(f"| {stage} | {s['status']} | {wall} | {s['note']} |")
    tables = "\n".join(lines)
    lines += ["", "Config:", "", "```yaml", config_yaml.rstrip(), "```", ""]
    paths = {"json": run_dir / "report.json", "md": run_dir / "report.md", "tables": tables}
    atomic_write_bytes(paths["json"], (json.dumps({**payload, "config": config_yaml}, indent=2) + "\n").encode())
    atomic_write_bytes(paths["md"], "\n".join(lines).encode())
    return paths
