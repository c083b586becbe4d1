"""Builds the pieces a run needs from a composed Hydra config; the entry points stay thin."""
from __future__ import annotations

import importlib
import io
import json
import logging
import os
from pathlib import Path
from typing import List, Optional

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from wsss.data.formats import atomic_write_bytes

log = logging.getLogger(__name__)


def build_supervision(cfg: DictConfig):
    """The per-sample weak-label loader of ``conf/supervision`` (None for plain tags)."""
    sup = cfg.get("supervision")
    if sup is None or sup.get("loader") is None:
        return None
    return instantiate(sup.loader, _convert_="all")


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    extra = {}
    if cfg.get("method") is not None and cfg.method.get("track_train_seeds"):  # a second validation loader
        extra["train_seed_samples"] = int(cfg.method.track_train_seeds)
    return instantiate(cfg.dataset, supervision=build_supervision(cfg), _convert_="all", **extra)


def build_method(cfg: DictConfig) -> pl.LightningModule:
    return instantiate(cfg.method, _convert_="all")


def build_callbacks(cfg: DictConfig, has_logger: bool = True) -> List[pl.Callback]:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if not has_logger:  # Lightning refuses an LR monitor without a logger
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    if any(name == "wandb" for name in (cfg.get("logger") or {})):
        from wsss.logging_utils import WandbValidationImages

        callbacks.append(WandbValidationImages())
    return callbacks


def build_loggers(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]


def build_trainer(cfg: DictConfig, **overrides) -> pl.Trainer:
    loggers = build_loggers(cfg)
    return instantiate(cfg.trainer, callbacks=build_callbacks(cfg, bool(loggers)), logger=loggers or False,
                       **overrides)


def _import(target: str):
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def load_method_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> pl.LightningModule:
    """A wsss Lightning checkpoint back into its method class (which it records itself)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    info = ckpt.get("wsss") if isinstance(ckpt, dict) else None
    if not info:
        raise ValueError(
            f"{path}: not a wsss Lightning checkpoint (no 'wsss' entry); official checkpoints of the seed "
            "repos are loaded with method=<name> so the method's importer can read them")
    cls = _import(info["target"])
    from wsss.optim import upgrade_hparams

    if upgrade_hparams(ckpt.get("hyper_parameters") or {}):  # written before wsss.optim: same groups, new keys
        buffer = io.BytesIO()
        torch.save(ckpt, buffer)
        buffer.seek(0)
        return cls.load_from_checkpoint(buffer, map_location=map_location, weights_only=False)
    return cls.load_from_checkpoint(path, map_location=map_location, weights_only=False)


def write_metrics(path: str | os.PathLike, metrics: dict, train_seeds: Optional[dict] = None) -> None:
    """``metrics.json`` with the keys the README promises (``val/mIoU``, ``val/mIoU_seam``, ``val/IoU``), and
    with ``method.track_train_seeds`` the seeds' ``train_seeds/mIoU``, ``train_seeds/mIoU_seam``, ..."""
    payload = {f"val/{k}": v for k, v in metrics.items()}
    payload.update({f"train_seeds/{k}": v for k, v in (train_seeds or {}).items()})
    atomic_write_bytes(path, json.dumps(payload, indent=2).encode())


_LIGHTNING_CKPT_KEYS = ("last", "best", "hpc", "registry")


def check_resume_path(ckpt_path) -> None:
    """``ckpt_path=`` (resume) must name an existing file; fails before any model or data is built."""
    if ckpt_path in (None, ""):
        return
    text = str(ckpt_path)
    if text in _LIGHTNING_CKPT_KEYS or text.startswith("registry:") or "://" in text:
        return  # Lightning's own keys and remote paths: Lightning resolves them
    path = Path(text).expanduser()
    if not path.is_file():
        where = "is a folder, not a checkpoint file" if path.is_dir() else "does not exist"
        shown = text if str(path.absolute()) == text else f"{text} ({path.absolute()})"
        raise FileNotFoundError(
            f"ckpt_path={shown} {where}; to resume a killed run pass its "
            "outputs/<date>/<time>/checkpoints/last.ckpt, or drop ckpt_path to train from scratch")


def _group_has(group: str, option: str) -> bool:
    """Whether config group ``group`` has ``option`` (an ``optional`` default such as ``preset:
    ${dataset}_${method}`` is recorded by Hydra as chosen even when no such file exists)."""
    try:
        from hydra.core.global_hydra import GlobalHydra

        return option in GlobalHydra.instance().config_loader().get_group_options(group)
    except Exception:  # noqa: BLE001 - no loader to ask: keep what Hydra recorded
        return True


def run_record(cfg: DictConfig) -> dict:
    """:func:`wsss.provenance.run_record` of a training run, plus ``choices`` (Hydra's config-group choices:
    method, dataset, backbone, supervision, experiment, preset, ...; null for a group not used, e.g. no preset
    file for this dataset and method; ``choices`` is null outside ``@hydra.main``), ``ckpt_path`` (resume) and
    ``wsss_version``."""
    from wsss.provenance import run_record as provenance_record

    record = provenance_record("train", cfg.get("seed"), {
        "labels_restrict_validation": bool(cfg.method.get("eval_with_labels", False)) if cfg.get("method") else None})
    choices = record.get("choices")
    if choices is not None:
        for group in ("method", "dataset", "backbone", "supervision", "experiment", "preset"):
            choices.setdefault(group, None)
        record["choices"] = {k: (v if v is None or _group_has(k, v) else None) for k, v in choices.items()}
    else:
        record["choices"], record["overrides"] = None, None
    record.update(ckpt_path=cfg.get("ckpt_path"), wsss_version=record["wsss"]["version"])
    return record


def start_run_record(cfg: DictConfig):
    """``<output_dir>/run.json`` (:class:`wsss.provenance.RunRecord`), written by rank 0 when ``fit`` starts, so a
    run that fails or is killed records its recipe too; None on other ranks or without an output folder."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    from wsss.provenance import RunRecord

    if getattr(rank_zero_only, "rank", 0) != 0 or cfg.get("paths") is None:
        return None
    return RunRecord(Path(str(cfg.paths.output_dir)), run_record(cfg))


def tag_wandb_runs(trainer, record: dict) -> None:
    """W&B runs get the run record as config and the chosen method / dataset / backbone as tags."""
    from pytorch_lightning.loggers import WandbLogger

    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger):
            lg.experiment.config.update({"wsss_run": record}, allow_val_change=True)
            choices = record.get("choices") or {}
            tags = [f"{k}={v}" for k, v in choices.items() if k in ("method", "dataset", "backbone", "experiment") and v]
            lg.experiment.tags = tuple(sorted(set(lg.experiment.tags or ()) | set(tags)))


def fit(cfg: DictConfig) -> dict:
    """Train and validate; returns the final validation metrics (rank 0). Writes ``run.json`` first
    (:func:`start_run_record`; completed with wall time, epoch and step at the end), ``metrics.json`` last
    (:func:`write_metrics`)."""
    if cfg.get("seed_network") is not None:
        raise ValueError("this experiment is a pipeline recipe (conf/experiment/*_pipeline.yaml): run it with "
                         "python -m wsss.pipeline experiment=NAME_pipeline, not python -m wsss.train")
    check_resume_path(cfg.get("ckpt_path"))
    record = start_run_record(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    model = build_method(cfg)
    trainer = build_trainer(cfg)
    if record is not None:
        tag_wandb_runs(trainer, record.record)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = model.last_val_metrics or {}
    if model.last_val_step != trainer.global_step or not metrics:
        trainer.validate(model, datamodule=datamodule, verbose=False)
        metrics = model.last_val_metrics
    if trainer.is_global_zero and metrics and cfg.get("metrics_file"):
        write_metrics(cfg.metrics_file, metrics, getattr(model, "last_train_seed_metrics", None))
    if record is not None:
        last = Path(str(cfg.paths.output_dir)) / "checkpoints" / "last.ckpt"
        record.finish(epoch=trainer.current_epoch, global_step=trainer.global_step,
                      last_checkpoint=str(last) if last.is_file() else None,
                      metrics_file=str(cfg.metrics_file) if metrics and cfg.get("metrics_file") else None)
    return metrics


def summary_lines(cfg: DictConfig, metrics: dict, trainer_dir: Optional[str] = None) -> List[str]:
    out = Path(cfg.paths.output_dir)
    lines = ["per-class IoU:"]
    for name, iou in (metrics.get("IoU") or {}).items():
        lines.append(f"  {name:<14s} {'-' if iou is None else f'{iou:.4f}'}")
    lines.append(f"mIoU (SEAM convention, all classes) = {metrics.get('mIoU_seam', float('nan')):.4f}")
    lines.append(f"checkpoints: {out / 'checkpoints'}")
    lines.append(f"metrics:     {cfg.get('metrics_file')}")
    lines.append(f"val/mIoU={metrics.get('mIoU', float('nan')):.4f}")
    return lines


def config_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=False)
