"""One pipeline run: each stage in order, skipped when finished, resumed when killed, then the report."""
from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path
from typing import List

from omegaconf import OmegaConf

from wsss.data.formats import read_split_list, write_split_list
from wsss.provenance import RunRecord
from wsss.reporting import echo
from wsss.stages.commands import (COMMANDS, STAGES, dataset_root, refine_of, resume_args, seed_ckpt,
                                  split_calibration)
from wsss.stages.records import check_same_command, read_record, write_record, write_report

log = logging.getLogger("wsss.pipeline")


def selected_stages(cfg) -> List[str]:
    chosen = list(cfg.get("stages") or STAGES)
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        raise ValueError(f"stages={chosen}: unknown {unknown}; the stages are {list(STAGES)}")
    return [s for s in STAGES if s in chosen]


def prepare_threshold_lists(cfg, run_dir: Path) -> None:
    """``calib.txt`` (the first ``calib_size`` ids of the data root's ``threshold.split`` list) and
    ``<split>.txt`` (the other ids, which report the seed number) of the threshold stage."""
    list_file = dataset_root(run_dir) / "ImageSets" / "Segmentation" / f"{cfg.threshold.split}.txt"
    if not list_file.is_file() and cfg.dataset.name == "voc":  # a VOC root without its lists: wsss's copies
        from wsss.data.voc import packaged_voc12_file

        list_file = packaged_voc12_file(f"{cfg.threshold.split}.txt")
    ids = read_split_list(list_file)
    calib, report = split_calibration(ids, int(cfg.threshold.calib_size), list_file)
    write_split_list(run_dir / "threshold" / "calib.txt", calib)
    write_split_list(run_dir / "threshold" / f"{cfg.threshold.split}.txt", report)  # names the metrics: train/mIoU


def run_stage(cfg, stage: str, run_dir: Path) -> None:
    """The stage's command in a child process (its output goes to this console and its own log file)."""
    if stage == "seed" and cfg.seed_network.get("ckpt"):
        if not seed_ckpt(cfg, run_dir).exists():
            raise FileNotFoundError(f"seed_network.ckpt={cfg.seed_network.ckpt}: no such file or folder")
        echo(f"[seed] skipped: the seed network is seed_network.ckpt={cfg.seed_network.ckpt}", logger=log)
        write_record(run_dir, stage, ["seed_network.ckpt", str(cfg.seed_network.ckpt)], 0.0,
                     note=f"given: {cfg.seed_network.ckpt}")
        return
    if stage in ("scores", "threshold") and refine_of(cfg) != "none":
        echo(f"[{stage}] skipped: pseudo.refine={refine_of(cfg)} labels from the seed network itself", logger=log)
        write_record(run_dir, stage, [f"pseudo.refine={refine_of(cfg)}"], 0.0,
                     note=f"not needed with pseudo.refine={refine_of(cfg)}")
        return
    if stage == "threshold":
        prepare_threshold_lists(cfg, run_dir)
    argv = COMMANDS[stage](cfg, run_dir)
    if stage == "threshold":  # the lists' content is not in the command line
        argv = argv + [f"# {cfg.threshold.split}.txt, first {cfg.threshold.calib_size} ids calibrate"]
    record = read_record(run_dir, stage)
    if record is not None:
        check_same_command(record, argv, run_dir)
        echo(f"[{stage}] done in an earlier run ({record['wall_s']:.1f} s); skipped", logger=log)
        return
    full = [a for a in argv if not a.startswith("# ")] + resume_args(stage, run_dir)
    echo(f"[{stage}] {' '.join(full)}", logger=log)
    start = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(full, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"stage '{stage}' failed (exit {proc.returncode}); its log is in {run_dir / stage}; "
                           "fix the cause and run the same command again: finished stages are skipped and this "
                           "one resumes")
    write_record(run_dir, stage, argv, time.time() - start)


def run(cfg, run_dir: Path) -> dict:
    """Every selected stage, then ``report.md`` / ``report.json`` of what the run folder holds."""
    record = RunRecord.start_tool(run_dir, "pipeline", seed=cfg.get("seed"), details={"stages": selected_stages(cfg)})
    for stage in selected_stages(cfg):
        try:
            run_stage(cfg, stage, run_dir)
        except Exception as exc:
            record.finish(status="failed", failed_stage=stage, error=str(exc))
            raise
    record.finish()
    paths = write_report(run_dir, cfg, OmegaConf.to_yaml(cfg, resolve=True))
    echo(paths.pop("tables"), logger=log)
    echo(f"wrote {paths['md']}, {paths['json']}", logger=log)
    return {"report": paths}
