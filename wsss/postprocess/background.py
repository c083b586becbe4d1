"""The background rule: one typed object, read once from config (``method.bg``, ``bg=``) and applied here only.

Foreground scores are per-class maps (C x H x W, no background), e.g. normalised CAMs in [0, 1].
* ``threshold``: a constant background plane at ``t`` (SEAM/RTC evaluation);
* ``power``: background = (1 - max_c fg)^alpha (SEAM/PSA pseudo labels);
* ``learned``: the method predicts background itself; its scores already have it.

``threshold`` and ``power`` are a :class:`Background`, the only kind that can turn stored foreground score dicts
into labels (``wsss.pseudo_label``, the CRF presets); ``learned`` is :class:`LearnedBackground`.
:func:`background_rule` reads either from a method's ``bg`` mapping.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping, Optional, Union

import torch

BG_RULES = ("threshold", "power")
RULE_KEYS = ("rule", "threshold", "alpha")


def plain_config(cfg) -> dict:
    """A DictConfig (resolved) or mapping as a plain dict."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


@dataclass(frozen=True)
class Background:
    """A background plane made from the foreground scores (``threshold`` or ``power``)."""

    rule: str = "threshold"
    threshold: float = 0.2
    alpha: float = 1.0

    def __post_init__(self):
        if self.rule not in BG_RULES:
            raise ValueError(f"background rule '{self.rule}' cannot be used here; use one of {BG_RULES} "
                             "(score dicts hold foreground classes only, so 'learned' has no background)")

    #: whether the method predicts background itself
    learned = False

    @classmethod
    def from_config(cls, cfg: Optional[Mapping]) -> Optional["Background"]:
        if cfg is None:
            return None
        if isinstance(cfg, Background):
            return cfg
        cfg = plain_config(cfg)
        unknown = set(cfg) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown background keys {sorted(unknown)}; expected rule, threshold, alpha")
        return cls(**cfg)

    def add(self, fg: torch.Tensor) -> torch.Tensor:
        """Prepend the background channel to ``fg`` (... x C x H x W)."""
        if self.rule == "threshold":
            bg = torch.full_like(fg[..., :1, :, :], float(self.threshold))
        else:
            top = fg.max(dim=-3, keepdim=True).values if fg.shape[-3] else torch.zeros_like(fg[..., :1, :, :])
            bg = (1.0 - top).clamp_min(0).pow(self.alpha)
        return torch.cat([bg, fg], dim=-3)


@dataclass(frozen=True)
class LearnedBackground:
    """The network predicts background (class 0 of an output with background): nothing is added."""

    rule: str = "learned"
    learned = True

    def add(self, scores: torch.Tensor) -> torch.Tensor:
        raise ValueError("bg.rule=learned: these scores have no background channel to keep; the method's output "
                         "declares has_background=false, so give it a threshold or power rule")


BackgroundRule = Union[Background, LearnedBackground]


def background_rule(cfg: Mapping) -> BackgroundRule:
    """A method's ``bg`` mapping (``rule``, ``threshold``, ``alpha``; other keys ignored) as its typed rule."""
    cfg = {k: v for k, v in plain_config(cfg).items() if k in RULE_KEYS}
    rule = cfg.get("rule", "threshold")
    if rule == "learned":
        return LearnedBackground()
    if rule not in BG_RULES:
        raise ValueError(f"unknown background rule '{rule}'; use threshold, power or learned")
    return Background(**cfg)
