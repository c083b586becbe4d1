"""python -m wsss.pipeline: every stage in one run folder, a failed stage resumed by the same command, the report."""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import python_exe

pytestmark = pytest.mark.slow

QUIET = ["dataset.num_workers=0", "logger=none", "trainer.enable_progress_bar=false", "dataset.batch_size=8"]


def pipeline(run_dir, root, *extra):
    seed = [f"'{o}'" for o in ["method=cam", "trainer.max_epochs=8", "trainer.check_val_every_n_epoch=8", *QUIET]]
    second = [f"'{o}'" for o in ["method=deeplab", "method.head={name: deeplabv3plus}", "trainer.max_epochs=6",
                                  "trainer.check_val_every_n_epoch=6", "method.optim.lr=0.005", *QUIET]]
    return [python_exe(), "-m", "wsss.pipeline", f"out_dir={run_dir}", f"dataset.root={root}",
            "dataset.extra=['dataset.synthetic=null']", f"seed_network.train=[{','.join(seed)}]",
            f"second_stage.train=[{','.join(second)}]", "threshold.calib_size=16",
            "seed_network.infer=['progress=false','loader_workers=0','workers=0']", *extra]


def test_pipeline_runs_resumes_and_reports(tmp_path, synthetic_root):
    run_dir = tmp_path / "run"
    broken = subprocess.run(pipeline(run_dir, synthetic_root, "pseudo.extra=['no_such_key=1']"),
                            capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert broken.returncode != 0
    assert "stage 'pseudo_label' failed" in broken.stderr and "run the same command again" in broken.stderr
    done = {s: (run_dir / s / "stage.json").stat().st_mtime_ns for s in ("seed", "scores", "threshold")}
    assert not (run_dir / "pseudo_label" / "stage.json").exists()

    fixed = subprocess.run(pipeline(run_dir, synthetic_root), capture_output=True, text=True, cwd=tmp_path,
                           timeout=900)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    for stage, mtime in done.items():  # finished stages are skipped, not redone
        assert f"[{stage}] done in an earlier run" in fixed.stdout
        assert (run_dir / stage / "stage.json").stat().st_mtime_ns == mtime
    report = json.loads((run_dir / "report.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert set(rows) == {"seed/val", "seed/train", "pseudo/train", "seg/val", "seg/val+crf"} - {"seg/val+crf"}
    thr = json.loads((run_dir / "threshold" / "metrics.json").read_text())
    assert rows["seed/train"]["protocol"]["background"]["chosen"] == "calibrated"
    assert thr["calibrated"]["calib_num_images"] == 16 and "oracle" in thr
    pseudo = json.loads((run_dir / "pseudo_label" / "metrics.json").read_text())
    assert pseudo["protocol"]["background"]["threshold"] == thr["calibrated"]["threshold"]
    assert rows["seg/val"]["mIoU"] == json.loads((run_dir / "final" / "metrics.json").read_text())["val/mIoU"]
    assert all(s["status"] == "done" for s in report["stages"].values())
    md = (run_dir / "report.md").read_text()
    assert "| seg/val |" in md and "| second_stage | done |" in md and "Config:" in md

    # a killed training stage resumes from its last.ckpt; a finished stage with other settings is refused
    (run_dir / "second_stage" / "stage.json").unlink()
    again = subprocess.run(pipeline(run_dir, synthetic_root, "stages=[second_stage]"), capture_output=True,
                           text=True, cwd=tmp_path, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"ckpt_path={run_dir / 'second_stage' / 'checkpoints' / 'last.ckpt'}" in again.stdout
    other = subprocess.run(pipeline(run_dir, synthetic_root, "stages=[scores]", "seed_network.infer=['flip=true']"),
                           capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert other.returncode != 0 and "stage 'scores' finished with other settings" in other.stderr
