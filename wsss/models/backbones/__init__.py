"""Backbone registry; every module in this package registers itself on import."""
from __future__ import annotations

import importlib
import pkgutil

from .base import BACKBONES, Backbone, set_bn_eval

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")


def build_backbone(name: str, weights: str | None = None, strict: bool = True, **kwargs) -> Backbone:
    """Construct a registered backbone and load ImageNet (or other) weights from a local path."""
    model = BACKBONES.build(name, **kwargs)
    if weights:
        from wsss.checkpoints.imagenet import load_backbone_weights

        load_backbone_weights(model, weights, strict=strict)
    return model


__all__ = ["BACKBONES", "Backbone", "build_backbone", "set_bn_eval"]
