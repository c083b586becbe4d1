"""A Hydra multirun ends with one table of every job's overrides and metrics, and mean ± std over seeds."""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import python_exe
from wsss.data.formats import save_score_dict, write_label_png
from wsss.sweep import write_summary


def fake_job(sweep: Path, num: int, overrides, metrics=None) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(list(overrides)), job / ".hydra" / "overrides.yaml")
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps({"schema": 1, "val/IoU": {"a": 0.5}, **metrics}))


def test_table_and_seed_statistics_are_hand_computed(tmp_path):
    for num, (t, seed, miou) in enumerate([(0.3, 0, 0.50), (0.3, 1, 0.56), (0.5, 0, 0.40), (0.5, 1, 0.44)]):
        fake_job(tmp_path, num, [f"method.bg.threshold={t}", f"seed={seed}", "logger=none"],
                 {"val/mIoU": miou, "val/pixel_acc": 0.9})
    fake_job(tmp_path, 4, ["method.bg.threshold=0.7", "seed=0", "logger=none"])  # a job that failed
    summary = write_summary(tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert md == summary["markdown"]
    assert md.startswith("Common overrides: logger=none\n")
    assert "| 0 | method.bg.threshold=0.3 seed=0 | ok | 0.5000 | 0.9000 |" in md
    assert "| 4 | method.bg.threshold=0.7 seed=0 | no metrics.json |  |  |" in md
    std = math.sqrt(((0.50 - 0.53) ** 2 + (0.56 - 0.53) ** 2) / 1)
    assert f"| method.bg.threshold=0.3 | 2 | 0.5300 ± {std:.4f} | 0.9000 ± 0.0000 |" in md
    assert "| method.bg.threshold=0.5 | 2 | 0.4200 ± 0.0283 |" in md
    assert "0.7 | 1" not in md  # a single run has no spread
    rows = (tmp_path / "summary.csv").read_text().splitlines()
    assert rows[0] == "job,overrides,status,val/mIoU,val/pixel_acc" and len(rows) == 6
    assert "val/IoU" not in rows[0]  # per-class dicts stay in each job's metrics.json


def test_no_job_folders_no_summary(tmp_path):
    assert write_summary(tmp_path) is None and not (tmp_path / "summary.md").exists()


def test_evaluate_sweep_writes_its_summary(tmp_path):
    gt_dir, scores = tmp_path / "SegmentationClass", tmp_path / "scores"
    rng = np.random.default_rng(0)
    ids = [f"img{i}" for i in range(3)]
    for name in ids:
        write_label_png(gt_dir / f"{name}.png", rng.integers(0, 3, size=(8, 9)).astype(np.uint8))
        save_score_dict(scores / f"{name}.npy", {0: rng.random((8, 9)), 1: rng.random((8, 9))})
    (tmp_path / "val.txt").write_text("\n".join(ids) + "\n")
    sweep = tmp_path / "sweep"
    proc = subprocess.run([python_exe(), "-m", "wsss.evaluate", "-m", f"pred_dir={scores}", f"gt_dir={gt_dir}",
                           f"list={tmp_path / 'val.txt'}", "type=npy", "threshold=0.2,0.6", "progress=false",
                           "dataset.num_classes=3", "dataset.class_names=[background,a,b]", f"out_dir={sweep}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "sweep summary (2 jobs;" in proc.stdout
    md = (sweep / "summary.md").read_text()
    for num, t in enumerate((0.2, 0.6)):
        miou = json.loads((sweep / str(num) / "metrics.json").read_text())["val/mIoU"]
        assert f"| {num} | threshold={t} | ok | {miou:.4f} |" in md
