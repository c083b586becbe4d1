"""Importer for SPML's released models (twke18/SPML: ``voc12_{tag,box,scribble,point}``, ``densepose_point``).

A release holds ``model-<iter>.pth`` files written by ``torch.save({'embedding_model': sd,
'prediction_model': sd})`` from the DataParallel's ``.module`` (CUDA storages, no ``module.`` prefix).
The key map (explicit, every key accounted for):

=====================================  =======================================================
official                               wsss ``SPMLModule``
=====================================  =======================================================
``embedding_model.resnet_backbone.*``  ``backbone.*`` (deep-stem ResNet, same names)
``embedding_model.aspp.*``             ``head.*`` (VOC: summed ASPP)
``embedding_model.pspp.*``             ``head.*`` (DensePose: PSPNet head)
``embedding_model.lfn.smooth_kernel``  dropped: the fixed colour-smoothing kernel of the DensePose
                                       training model, recomputed by the method
``prediction_model.semantic_classifier.*``  ``classifier.*``
=====================================  =======================================================
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Mapping, Tuple

import torch
from torch import nn

DROPPED = ("lfn.smooth_kernel.weight",)
_EMBEDDING_MAP = (("resnet_backbone.", "backbone."), ("aspp.", "head."), ("pspp.", "head."))
_PREDICTION_MAP = (("semantic_classifier.", "classifier."),)


def find_checkpoint_file(path: str | Path) -> Path:
    """A file as it is; a directory: its ``model-<N>.pth`` with the largest N (an unzipped release
    has e.g. ``softmax_classifier_stage1/model-3999.pth``; searched recursively, stage2 preferred)."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"SPML checkpoint not found: {path}")
    found = [p for p in path.rglob("model-*.pth") if re.fullmatch(r"model-\d+\.pth", p.name)]
    if not found:
        raise FileNotFoundError(
            f"no SPML model file (model-<iteration>.pth) under {path}; pass the .pth file itself")
    def rank(p: Path):
        stage = 2 if "stage2" in str(p) else (1 if "softmax_classifier" in str(p) else 0)
        return stage, int(re.findall(r"\d+", p.name)[-1])
    return max(found, key=rank)


def _describe(obj) -> str:
    if not isinstance(obj, Mapping):
        return type(obj).__name__
    keys = list(obj.keys())
    if "state_dict" in keys and "pytorch-lightning_version" in keys:
        return "a Lightning checkpoint (load it with ckpt=... as a wsss checkpoint, not as an SPML release)"
    if any(str(k).startswith("b2.") or str(k).startswith("conv1a") for k in keys):
        return "a ResNet-38 state dict (RTC/SEAM family), not SPML"
    return f"a dict with keys {keys[:6]}"


def is_official(obj) -> bool:
    """Whether a loaded object has the release layout ``{'embedding_model', 'prediction_model'}``."""
    return isinstance(obj, Mapping) and "embedding_model" in obj and "prediction_model" in obj


def read_official(path: str | Path) -> Tuple[Dict[str, torch.Tensor], Path]:
    """Load a release file on CPU (``weights_only``) and return the wsss-keyed state dict."""
    file = find_checkpoint_file(path)
    obj = torch.load(file, map_location="cpu", weights_only=True)
    if not is_official(obj):
        raise ValueError(f"{file}: not an SPML release ({{'embedding_model', 'prediction_model'}}); it looks like "
                         f"{_describe(obj)}")
    return convert_official(obj), file


def _rename(key: str, table) -> str | None:
    key = key[len("module."):] if key.startswith("module.") else key
    if key in DROPPED:
        return None
    for old, new in table:
        if key.startswith(old):
            return new + key[len(old):]
    raise KeyError(f"unexpected key '{key}' in an SPML release; the importer knows {[o for o, _ in table]}")


def convert_official(obj: Mapping) -> Dict[str, torch.Tensor]:
    out: Dict[str, torch.Tensor] = {}
    for part, table in (("embedding_model", _EMBEDDING_MAP), ("prediction_model", _PREDICTION_MAP)):
        for key, value in obj[part].items():
            new = _rename(key, table)
            if new is not None:
                out[new] = value
    return out


def load_official_into(model: nn.Module, path: str | Path) -> Path:
    """Strictly load a release into an ``SPMLModule`` (backbone, head, classifier): every key and shape
    must match; a mismatch names the keys and the likely cause."""
    state, file = read_official(path)
    target = {}
    for prefix in ("backbone", "head", "classifier"):
        for k, v in getattr(model, prefix).state_dict().items():
            target[f"{prefix}.{k}"] = v
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    bad = [k for k in set(target) & set(state) if tuple(target[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or bad:
        hint = ("check method.head (aspp for VOC, pspp for DensePose), method.embedding_dim (64 VOC, 32 DensePose), "
                "dataset.num_classes (21 / 15) and backbone=resnet101_deepstem")
        raise ValueError(
            f"{file}: does not fit this SPML model: missing {missing[:5]} ({len(missing)}), unexpected "
            f"{unexpected[:5]} ({len(unexpected)}), shape mismatch "
            f"{[(k, tuple(state[k].shape), tuple(target[k].shape)) for k in bad[:5]]}; {hint}")
    for prefix in ("backbone", "head", "classifier"):
        sub = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
        getattr(model, prefix).load_state_dict(sub, strict=True)
    return file


def official_experiment(path: str | Path) -> str:
    """``spml_densepose_point`` for the DensePose release (15 classes, PSPP head), else a VOC12 recipe
    (the tag / box / scribble / point releases share one architecture)."""
    state, _ = read_official(path)
    classes = {int(v.shape[0]) for k, v in state.items() if k.startswith("classifier.") and v.ndim == 4}
    if 15 in classes or any(k.startswith("head.") and "pspp" in k for k in state):
        return "spml_densepose_point"
    return "spml_voc_scribble"
