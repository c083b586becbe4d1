"""Builds the pieces a run needs from a composed Hydra config; the entry points stay thin."""
from __future__ import annotations

import importlib
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
    return instantiate(cfg.dataset, supervision=build_supervision(cfg), _convert_="all")


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
    return cls.load_from_checkpoint(path, map_location=map_location, weights_only=False)


def write_metrics(path: str | os.PathLike, metrics: dict) -> None:
    """``metrics.json`` with the keys the README promises (``val/mIoU``, ``val/mIoU_seam``, ``val/IoU``)."""
    payload = {f"val/{k}": v for k, v in metrics.items()}
    atomic_write_bytes(path, json.dumps(payload, indent=2).encode())


def fit(cfg: DictConfig) -> dict:
    """Train and validate; returns the final validation metrics (rank 0)."""
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    model = build_method(cfg)
    trainer = build_trainer(cfg)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = getattr(model, "last_val_metrics", {}) or {}
    if getattr(model, "_last_val_step", None) != trainer.global_step or not metrics:
        trainer.validate(model, datamodule=datamodule, verbose=False)
        metrics = model.last_val_metrics
    if trainer.is_global_zero and metrics and cfg.get("metrics_file"):
        write_metrics(cfg.metrics_file, metrics)
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
