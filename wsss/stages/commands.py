"""The command line of each pipeline stage: the same ``python -m wsss.<tool>`` a user would type.

Each stage runs its tool in a child process, so a stage is exactly what its tool does from the command line
(its own log, output folder, resume rule and official-checkpoint handling), and a crash in one stage leaves
the finished ones on disk. Order: ``seed`` (train the seed network) -> ``scores`` (multi-scale scores on the
pseudo-label split) -> ``threshold`` (background threshold calibrated on a few labelled images) ->
``pseudo_label`` (with the method's CRF) -> ``second_stage`` (train the segmentation network on the pseudo
labels) -> ``final`` (infer and score on val, with and without CRF).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

STAGES = ("seed", "scores", "threshold", "pseudo_label", "second_stage", "final")


def _dataset_args(cfg, with_group: bool = True) -> List[str]:
    args = [f"dataset={cfg.dataset.name}"] if with_group else []
    if cfg.dataset.get("root"):
        args.append(f"dataset.root={cfg.dataset.root}")
    return args + [str(a) for a in cfg.dataset.get("extra") or []]


def _python(cfg) -> List[str]:
    return [str(cfg.get("python") or sys.executable)]


def seed_ckpt(cfg, run_dir: Path) -> Path:
    """The seed network: ``seed_network.ckpt`` when given (a wsss checkpoint or an authors' file), else the
    ``seed`` stage's last checkpoint."""
    given = cfg.seed_network.get("ckpt")
    return Path(str(given)).expanduser() if given else run_dir / "seed" / "checkpoints" / "last.ckpt"


def seed_command(cfg, run_dir: Path) -> List[str]:
    out = run_dir / "seed"
    args = [*_python(cfg), "-m", "wsss.train", *map(str, cfg.seed_network.train), *_dataset_args(cfg),
            f"seed={cfg.seed}", f"hydra.run.dir={out}"]
    if cfg.backbone.get("weights"):
        args.append(f"backbone.weights={cfg.backbone.weights}")
    return args


def scores_command(cfg, run_dir: Path) -> List[str]:
    args = [*_python(cfg), "-m", "wsss.infer", f"ckpt={seed_ckpt(cfg, run_dir)}", *_dataset_args(cfg),
            f"split={cfg.pseudo.split}", "crf=none", f"out_dir={run_dir / 'scores'}",
            *map(str, cfg.seed_network.infer)]
    if cfg.seed_network.get("method"):
        args.append(f"method={cfg.seed_network.method}")
    return args


def threshold_command(cfg, run_dir: Path) -> List[str]:
    lists, root = run_dir / "threshold", dataset_root(run_dir)
    return [*_python(cfg), "-m", "wsss.evaluate", f"pred_dir={run_dir / 'scores' / 'scores'}",
            f"gt_dir={root / 'SegmentationClass'}", f"list={lists / (str(cfg.threshold.split) + '.txt')}", f"calib_list={lists / 'calib.txt'}",
            "type=npy", "curve=true", f"curve_thresholds={cfg.threshold.thresholds}", f"dataset={cfg.dataset.name}",
            f"out_dir={run_dir / 'threshold'}"]


def refine_of(cfg) -> str:
    """``pseudo.refine``: ``none`` (scores -> calibrated threshold -> CRF) or a model-based refinement such as SPML's
    ``random_walk``, which labels from the seed network itself (no scores or threshold stage)."""
    return str(cfg.pseudo.get("refine") or "none")


def pseudo_label_command(cfg, run_dir: Path) -> List[str]:
    refine = refine_of(cfg)
    if refine != "none":
        args = [*_python(cfg), "-m", "wsss.pseudo_label", f"ckpt={seed_ckpt(cfg, run_dir)}", *_dataset_args(cfg),
                f"split={cfg.pseudo.split}", f"refine={refine}", f"crf={cfg.pseudo.crf}",
                f"out_dir={run_dir / 'pseudo_label'}", *map(str, cfg.pseudo.extra)]
        if cfg.seed_network.get("method"):
            args.append(f"method={cfg.seed_network.method}")
        return args
    chosen = json.loads((run_dir / "threshold" / "metrics.json").read_text())["calibrated"]["threshold"]
    return [*_python(cfg), "-m", "wsss.pseudo_label", f"scores_dir={run_dir / 'scores' / 'scores'}",
            *_dataset_args(cfg), f"split={cfg.pseudo.split}", f"bg.threshold={chosen}", f"crf={cfg.pseudo.crf}",
            f"out_dir={run_dir / 'pseudo_label'}", *map(str, cfg.pseudo.extra)]


def second_stage_command(cfg, run_dir: Path) -> List[str]:
    args = [*_python(cfg), "-m", "wsss.train", *map(str, cfg.second_stage.train), *_dataset_args(cfg),
            f"dataset.pseudo_label_dir={run_dir / 'pseudo_label'}", f"seed={cfg.seed}",
            f"hydra.run.dir={run_dir / 'second_stage'}"]
    if cfg.second_stage.get("weights"):
        args.append(f"backbone.weights={cfg.second_stage.weights}")
    if cfg.second_stage.get("from_seed"):  # e.g. SPML's stage 2: the seed network's embedding, a new classifier
        args.append(f"method.weights={seed_ckpt(cfg, run_dir)}")
    return args


def final_command(cfg, run_dir: Path) -> List[str]:
    crf = [f"crf={cfg.second_stage.crf}"] if cfg.second_stage.get("crf") is not None else []
    return [*_python(cfg), "-m", "wsss.infer", f"ckpt={run_dir / 'second_stage' / 'checkpoints' / 'last.ckpt'}",
            *_dataset_args(cfg), "split=val", *crf, f"out_dir={run_dir / 'final'}", *map(str, cfg.second_stage.infer)]


COMMANDS: Dict[str, Callable] = {"seed": seed_command, "scores": scores_command, "threshold": threshold_command,
                                 "pseudo_label": pseudo_label_command, "second_stage": second_stage_command,
                                 "final": final_command}


def dataset_root(run_dir: Path) -> Path:
    """The data root the ``scores`` stage read (absolute), from its ``settings.json``."""
    settings = run_dir / "scores" / "settings.json"
    if not settings.is_file():
        raise FileNotFoundError(f"{settings}: the scores stage has not run; run the pipeline without stages= "
                                "or with stages=[scores,...] first")
    return Path(json.loads(settings.read_text())["dataset_root"])


def resume_args(stage: str, run_dir: Path) -> List[str]:
    """Inside a killed training stage: continue from its ``last.ckpt`` (the other tools resume by themselves)."""
    if stage in ("seed", "second_stage"):
        last = run_dir / stage / "checkpoints" / "last.ckpt"
        if last.is_file():
            return [f"ckpt_path={last}"]
    return []


def split_calibration(ids: List[str], calib_size: int, list_file: Path) -> Optional[tuple]:
    """``(calib ids, report ids)``: the first ``calib_size`` ids calibrate the threshold, the rest report."""
    if not 0 < calib_size < len(ids):
        raise ValueError(f"threshold.calib_size={calib_size} must be between 1 and {len(ids) - 1}: {list_file} "
                         f"has {len(ids)} ids, and the ids left after calibration report the seed number")
    return ids[:calib_size], ids[calib_size:]
