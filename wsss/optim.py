"""One optimisation vocabulary for every method: parameter groups from a paramwise config, one scheduler set.

The seed repos all write their own ``get_parameter_groups``; they differ only in a few choices, which
``method.optim.paramwise`` states as data (after mmsegmentation's ``paramwise_cfg``):

* ``lr_mult``: parameter-name prefix -> learning-rate multiplier, first match wins (e.g. ``{backbone: 1.0}``);
  ``default_lr_mult`` is every other parameter's (the new layers: DeepLab's 10x rule);
* ``bias_lr_mult`` / ``bias_decay_mult``: biases' extra multipliers (the references' 2x lr, no decay);
* ``norm_biases_as_biases``: whether BatchNorm biases follow the bias rule (RTC, SPML) or the weights' (DeepLab);
* ``norm_trainable``: false leaves BatchNorm affine parameters out (Yude Wang's conv-only groups).

Schedulers (``method.scheduler.name``): ``poly`` (``(1 - t/T)^power``; with ``max_steps`` T is that count and the last
lr is held after it, as the PSA-lineage ``PolyOptimizer`` does), ``warmup_poly`` (SPML: linear from
``warmup_start`` over ``warmup_steps``, never above poly), ``constant``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Mapping

import torch
from torch import nn

PARAMWISE_DEFAULTS = {"lr_mult": {"backbone": 1.0}, "default_lr_mult": 10.0, "bias_lr_mult": 1.0,
                      "bias_decay_mult": 1.0, "norm_biases_as_biases": True, "norm_trainable": True}
OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULERS = ("poly", "warmup_poly", "constant")


def paramwise_config(paramwise: Mapping | None) -> dict:
    """``paramwise`` completed with the defaults; unknown keys are errors (a typo would silently change lr)."""
    cfg = dict(PARAMWISE_DEFAULTS)
    unknown = set(paramwise or {}) - set(cfg)
    if unknown:
        raise ValueError(f"method.optim.paramwise: unknown keys {sorted(unknown)}; known: {sorted(cfg)}")
    cfg.update(dict(paramwise or {}))
    cfg["lr_mult"] = dict(cfg["lr_mult"] or {})
    return cfg


def _norm_parameter_ids(model: nn.Module) -> set:
    return {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}


def _lr_mult_of(name: str, rules: Mapping[str, float], default: float) -> tuple:
    for prefix, mult in rules.items():
        if name == prefix or name.startswith(prefix + "."):
            return prefix, float(mult)
    return "*", float(default)


def param_groups(model: nn.Module, lr: float, weight_decay: float, paramwise: Mapping | None) -> List[dict]:
    """Optimiser groups of ``model``'s trainable parameters: one per (lr rule, weight or bias), in rule order,
    each with its own ``lr`` and ``weight_decay``; empty groups are dropped."""
    cfg = paramwise_config(paramwise)
    norm_ids = _norm_parameter_ids(model)
    order = list(cfg["lr_mult"]) + ["*"]
    buckets: Dict[tuple, List[nn.Parameter]] = {}
    mults: Dict[str, float] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad or (not cfg["norm_trainable"] and id(p) in norm_ids):
            continue
        rule, mult = _lr_mult_of(name, cfg["lr_mult"], cfg["default_lr_mult"])
        mults[rule] = mult
        is_bias = name.endswith("bias") and (cfg["norm_biases_as_biases"] or id(p) not in norm_ids)
        buckets.setdefault((rule, is_bias), []).append(p)
    groups = []
    for rule in order:
        for is_bias in (False, True):
            params = buckets.get((rule, is_bias))
            if not params:
                continue
            lr_mult = mults[rule] * (float(cfg["bias_lr_mult"]) if is_bias else 1.0)
            decay = weight_decay * (float(cfg["bias_decay_mult"]) if is_bias else 1.0)
            groups.append({"params": params, "lr": lr * lr_mult, "weight_decay": decay})
    return groups


def build_optimizer(model: nn.Module, optim: Mapping) -> torch.optim.Optimizer:
    """``method.optim`` (``name``, ``lr``, ``weight_decay``, ``paramwise`` and the optimiser's own keywords)."""
    cfg = dict(optim)
    name = str(cfg.pop("name", "sgd")).lower()
    if "head_lr_mult" in cfg:
        raise ValueError("method.optim.head_lr_mult is now method.optim.paramwise.default_lr_mult (the lr multiplier "
                         "of every parameter outside the backbone)")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer '{name}'; use one of {sorted(OPTIMIZERS)}")
    lr = float(cfg.pop("lr"))
    weight_decay = float(cfg.pop("weight_decay", 0.0))
    groups = param_groups(model, lr, weight_decay, cfg.pop("paramwise", None))
    return OPTIMIZERS[name](groups, lr=lr, weight_decay=weight_decay, **cfg)


def lr_factor(scheduler: Mapping, total_steps: int) -> Callable[[int], float] | None:
    """The learning-rate factor of step ``t`` (None: constant)."""
    cfg = dict(scheduler or {})
    kind = cfg.pop("name", "poly")
    if kind in (None, "none", "constant"):
        return None
    if kind not in SCHEDULERS:
        raise ValueError(f"unknown scheduler '{kind}'; use one of {list(SCHEDULERS)}")
    total = max(1, int(total_steps))
    # poly over its own horizon, then the last lr held (HSC's PolyOptimizer: max_step = 13,215 of 20,000 steps)
    horizon = int(cfg["max_steps"]) if cfg.get("max_steps") else None
    if horizon is not None and horizon < 1:
        raise ValueError(f"method.scheduler.max_steps must be a positive step count, not {horizon}")
    power = float(cfg.get("power", 0.9))
    warm = int(cfg.get("warmup_steps", 0)) if kind == "warmup_poly" else 0
    start = float(cfg.get("warmup_start", 0.1))

    def factor(step: int) -> float:
        if horizon is not None:  # utils/torchutils.py PolyOptimizer: lr updated only while step < max_step
            return (1.0 - min(step, horizon - 1) / horizon) ** power
        poly = max(0.0, 1.0 - min(step, total) / total) ** power
        if step < warm:  # spml/utils/general/train.py:lr_poly
            a = step / warm
            return min(start * (1 - a) + a, poly)
        return poly

    return factor


def method_optim(method: str, **overrides) -> dict:
    """``method.optim`` of ``conf/method/METHOD.yaml`` (its paramwise groups), for a method built in Python."""
    from omegaconf import OmegaConf

    from wsss.paths import config_dir

    node = OmegaConf.load(Path(config_dir()) / "method" / f"{method}.yaml").optim
    return {**OmegaConf.to_container(node), **overrides}


def upgrade_hparams(hparams: dict) -> bool:
    """Rewrite a checkpoint's hyper-parameters from before this vocabulary (``optim.head_lr_mult``, RTC / DeepLab
    ``bias_lr_mult``, DeepLab ``bias_weight_decay`` / ``train_bn_affine``, SPML ``lr_mult`` / ``warmup_steps``)
    into ``optim.paramwise`` and ``scheduler``, in place, with the same groups. Returns whether anything changed."""
    legacy = ("bias_lr_mult", "bias_weight_decay", "train_bn_affine", "lr_mult", "warmup_steps")
    optim = dict(hparams.get("optim") or {})
    if not any(k in hparams for k in legacy) and "head_lr_mult" not in optim:
        return False
    paramwise = {"lr_mult": {"backbone": 1.0}, "default_lr_mult": float(optim.pop("head_lr_mult", 10.0))}
    if "bias_lr_mult" in hparams:  # RTC: biases never decay; DeepLab: bias_weight_decay says
        paramwise["bias_lr_mult"] = float(hparams.pop("bias_lr_mult"))
        decay = hparams.pop("bias_weight_decay", 0.0) if "train_bn_affine" in hparams else 0.0
        paramwise["bias_decay_mult"] = 1.0 if decay is None else float(decay) / max(optim.get("weight_decay", 0), 1e-12)
    if "train_bn_affine" in hparams:
        paramwise.update(norm_biases_as_biases=False, norm_trainable=bool(hparams.pop("train_bn_affine")))
    if "lr_mult" in hparams:  # SPML: {backbone,head}_{weight,bias}
        mult = dict(hparams.pop("lr_mult") or {})
        weight = float(mult.get("backbone_weight", 1.0))
        paramwise.update(lr_mult={"backbone": weight}, default_lr_mult=float(mult.get("head_weight", 10.0)),
                         bias_lr_mult=float(mult.get("backbone_bias", 2.0)) / weight, bias_decay_mult=0.0)
    if "warmup_steps" in hparams:
        hparams["scheduler"] = {**dict(hparams.get("scheduler") or {}), "name": "warmup_poly",
                                "warmup_steps": int(hparams.pop("warmup_steps"))}
    hparams["optim"] = {**optim, "paramwise": paramwise}
    return True


def optimizers_for(model: nn.Module, optim: Mapping, scheduler: Mapping, total_steps: int):
    """What ``configure_optimizers`` returns: the optimiser and, unless constant, a per-step LambdaLR."""
    opt = build_optimizer(model, optim)
    factor = lr_factor(scheduler, total_steps)
    if factor is None:
        return opt
    return {"optimizer": opt,
            "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, factor), "interval": "step"}}
