"""A Hydra multirun that summarises itself: one table of every job's overrides and metrics.

Why: a sweep of ``train``, ``evaluate`` or ``pseudo_label`` leaves N folders, each with its own
``metrics.json``; reading them one by one is how numbers get compared wrongly. At the end of a sweep,
:class:`SweepSummary` (a Hydra callback, ``conf/hydra/default.yaml``) reads each job's overrides and
``metrics.json`` from disk (so any launcher works) and writes ``summary.csv`` and ``summary.md`` into the
sweep folder, printing the Markdown table. Where jobs differ only by ``seed``, a second table gives the
mean ± sample standard deviation of each metric per setting.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from wsss.data.formats import atomic_write_bytes

log = logging.getLogger("wsss.sweep")

SEED_KEYS = ("seed", "+seed", "++seed")


def job_dirs(sweep_dir: Path) -> List[Path]:
    """Job folders of a sweep (those with Hydra's ``.hydra/overrides.yaml``), in job-number order."""
    found = [p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")]
    return sorted(found, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def numeric_metrics(record: dict) -> Dict[str, float]:
    """The scalar metrics of a ``metrics.json`` (``<split>/<metric>`` keys with a number), in file order."""
    return {k: float(v) for k, v in record.items()
            if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool)}


def read_job(job_dir: Path) -> dict:
    overrides = [str(o) for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")]
    metrics_file = job_dir / "metrics.json"
    metrics = numeric_metrics(json.loads(metrics_file.read_text())) if metrics_file.is_file() else {}
    return {"job": job_dir.name, "overrides": overrides, "metrics": metrics,
            "status": "ok" if metrics else "no metrics.json"}


def setting_of(overrides: Sequence[str]) -> tuple:
    """The overrides without the seed: jobs with the same setting are repeats."""
    return tuple(o for o in overrides if o.partition("=")[0] not in SEED_KEYS)


def mean_std(values: Sequence[float]) -> tuple:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else float("nan")
    return mean, std


def summarise(jobs: List[dict]) -> dict:
    """Rows of every job and, where settings repeat over seeds, their mean ± std."""
    names: List[str] = []
    for job in jobs:
        names += [k for k in job["metrics"] if k not in names]
    groups: Dict[tuple, List[dict]] = {}
    for job in jobs:
        groups.setdefault(setting_of(job["overrides"]), []).append(job)
    repeated = {s: g for s, g in groups.items() if len(g) > 1}
    seeds = [{"setting": list(s), "runs": len(g),
              **{n: mean_std([j["metrics"][n] for j in g if n in j["metrics"]]) for n in names
                 if any(n in j["metrics"] for j in g)}} for s, g in repeated.items()]
    return {"metrics": names, "jobs": jobs, "seeds": seeds}


def _markdown(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def common_overrides(jobs: List[dict]) -> List[str]:
    """Overrides every job shares (shown once above the table, not in every row)."""
    shared = set.intersection(*(set(j["overrides"]) for j in jobs)) if jobs else set()
    return [o for o in jobs[0]["overrides"] if o in shared] if jobs else []


def _varying(overrides: Sequence[str], common: Sequence[str]) -> str:
    return " ".join(o for o in overrides if o not in common) or "(none)"


def render(summary: dict) -> tuple:
    """``(csv text, markdown text)`` of a :func:`summarise` result; the CSV keeps every override."""
    names = summary["metrics"]
    common = common_overrides(summary["jobs"])
    rows = [[j["job"], _varying(j["overrides"], common), j["status"]]
            + [f"{j['metrics'][n]:.4f}" if n in j["metrics"] else "" for n in names] for j in summary["jobs"]]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["job", "overrides", "status"] + names)
    writer.writerows([[j["job"], " ".join(j["overrides"]), j["status"]]
                      + [repr(j["metrics"][n]) if n in j["metrics"] else "" for n in names] for j in summary["jobs"]])
    md = (f"Common overrides: {' '.join(common)}\n\n" if common else "") + _markdown(
        ["job", "overrides", "status"] + names, rows)
    if summary["seeds"]:
        seed_rows = [[_varying(s["setting"], common), str(s["runs"])] + [f"{s[n][0]:.4f} ± {s[n][1]:.4f}" if n in s else ""
                                                       for n in names] for s in summary["seeds"]]
        md += "\n\nOver seeds (mean ± sample std):\n\n" + _markdown(["setting", "runs"] + names, seed_rows)
    return buf.getvalue(), md + "\n"


def write_summary(sweep_dir: Path) -> Optional[dict]:
    """``summary.csv`` and ``summary.md`` of the sweep in ``sweep_dir``; None when it has no job folders."""
    jobs = [read_job(d) for d in job_dirs(sweep_dir)]
    if not jobs:
        return None
    summary = summarise(jobs)
    text_csv, text_md = render(summary)
    atomic_write_bytes(sweep_dir / "summary.csv", text_csv.encode())
    atomic_write_bytes(sweep_dir / "summary.md", text_md.encode())
    return {**summary, "markdown": text_md}


class SweepSummary(Callback):
    """Hydra callback: :func:`write_summary` when a multirun ends (a failed summary never fails the sweep)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            summary = write_summary(sweep_dir)
        except Exception as exc:  # noqa: BLE001 - the jobs' own outputs stand; say why there is no table
            log.warning("sweep summary of %s not written: %s", sweep_dir, exc)
            return
        if summary is not None:
            print(f"\nsweep summary ({len(summary['jobs'])} jobs; {sweep_dir / 'summary.md'}):\n\n"
                  f"{summary['markdown']}", flush=True)
