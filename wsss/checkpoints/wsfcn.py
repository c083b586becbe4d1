"""Importer for WS-FCN's released model ``model_enc_e018Xs0.905.pth`` (ChunyanWang1/ws-fcn @ 73927f5).

The file is ``torch.save(model.state_dict())`` of the un-wrapped ``models/stage_net.py`` ``SoftMaxAE``
(``utils/checkpoints.py``): a plain dict of 355 tensors with CUDA storages (read with ``map_location='cpu'``), no
``module.`` prefix (one is stripped if present). Key map (every key accounted for):

==========================================  ==========================================================
official                                    wsss ``WSFCNModule``
==========================================  ==========================================================
``conv1a.*``, ``b2*`` ... ``b7.*``, ``bn7.*``  ``backbone.*`` (resnet38d, same names)
``fca.*``, ``align1.*``, ``sf2.*``,         ``head.*`` (same names, ``wsss/models/heads/wsfcn.py``)
``last_conv.*``
``fca.fca{1..4}.bn.*`` (5 each)             dropped (shape-checked): a BatchNorm each factorised branch
                                            creates and never calls (``models/mods/fca.py``)
``_aff.aff_{x,m,std}.kernel``               dropped (shape-checked): PAMR's constant shift kernels
                                            (``wsss.methods.cam_ops`` shifts by slicing)
==========================================  ==========================================================
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Tuple

import torch
from torch import nn

HEAD_ROOTS = ("fca", "align1", "sf2", "last_conv")
BACKBONE_ROOTS = ("conv1a", "bn7", "b2", "b2_1", "b2_2", "b3", "b3_1", "b3_2", "b4", "b4_1", "b4_2", "b4_3", "b4_4",
                  "b4_5", "b5", "b5_1", "b5_2", "b6", "b7")
DROPPED = {"_aff.aff_x.kernel": (8, 1, 3, 3), "_aff.aff_m.kernel": (8, 1, 3, 3), "_aff.aff_std.kernel": (9, 1, 3, 3),
           **{f"fca.fca{i}.bn.{p}": (() if p == "num_batches_tracked" else (256,))
              for i in range(1, 5) for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}}
SIGNATURE = ("fca.conv1.weight", "align1.flow_make.weight", "sf2.conv1h.weight", "last_conv.8.weight")


def _strip(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def describe(obj) -> str:
    """What a loaded checkpoint object looks like, naming the method whose release it resembles."""
    if not isinstance(obj, Mapping):
        return f"a {type(obj).__name__}, not a state dict"
    keys = [str(k) for k in obj.keys()]
    ks = {_strip(k) for k in keys}
    if {"embedding_model", "prediction_model"} <= set(keys):
        return "an SPML release ({'embedding_model', 'prediction_model'}); load it with method=spml"
    if "state_dict" in keys and ("pytorch-lightning_version" in keys or "wsss" in keys):
        info = obj.get("wsss") or {}
        name = info.get("method", "unknown method") if isinstance(info, Mapping) else "unknown method"
        return (f"a Lightning checkpoint of wsss method '{name}'; pass it as a wsss checkpoint "
                f"(ckpt=..., with method={name}), not as an official WS-FCN file")
    if {"proj1.weight", "classifier1.weight", "classifier2.weight"} <= ks:
        return "the RTC release (rtc_contrast_best.pth); load it with method=rtc"
    if any(k.startswith(("conv1a.", "b2.")) for k in ks):
        heads = sorted({k.split(".")[0] for k in ks} - set(BACKBONE_ROOTS))
        if not heads:
            return "a plain resnet38d (ImageNet) state dict without WS-FCN's layers; use it as backbone.weights"
        if "fc8.weight" in ks and "fca.conv1.weight" not in ks:
            return f"a ResNet-38 CAM checkpoint (heads {heads}, e.g. SEAM / PSA / 1-stage-wseg's baseline); not WS-FCN"
        return f"a ResNet-38 checkpoint with heads {heads}, not WS-FCN's {list(HEAD_ROOTS)}"
    if any(k.startswith(("layer1.", "conv1.", "resnet_backbone.", "backbone.")) for k in ks):
        return "a ResNet/DeepLab-style state dict, not WS-FCN's ResNet-38"
    return f"a dict with keys {keys[:6]}"


def is_official(obj) -> bool:
    return isinstance(obj, Mapping) and all(k in {_strip(str(x)) for x in obj} for k in SIGNATURE)


def convert_official(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official key names -> wsss ``WSFCNModule`` state-dict names (backbone + head)."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = _strip(key)
        if key in DROPPED:
            if tuple(value.shape) != DROPPED[key]:
                raise ValueError(f"official WS-FCN key {key} has shape {tuple(value.shape)}, expected {DROPPED[key]}")
            continue
        root = key.partition(".")[0]
        if root in BACKBONE_ROOTS:
            out["backbone." + key] = value
        elif root in HEAD_ROOTS:
            out["head." + key] = value
        else:
            raise KeyError(f"unexpected key '{key}' in a WS-FCN checkpoint; the importer knows {list(HEAD_ROOTS)}, "
                           f"{list(BACKBONE_ROOTS)} and the dropped {sorted(DROPPED)[:3]}...")
    return out


def _load_raw(path: str | Path):
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"WS-FCN checkpoint not found: {path} (the release file is model_enc_e018Xs0.905.pth)")
    if path.suffix == ".params":
        raise ValueError(f"{path}: an MXNet .params file (the ResNet-38 ImageNet weights); pass it as "
                         "backbone.weights=..., not as a WS-FCN checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure gets the same explanation
        raise ValueError(f"{path}: cannot be read as a torch state dict ({exc.__class__.__name__}: {exc}); "
                         "the WS-FCN release is model_enc_e018Xs0.905.pth") from exc
    if not is_official(obj):
        raise ValueError(f"{path}: not an official WS-FCN checkpoint (expects {list(SIGNATURE)}); it looks like "
                         f"{describe(obj)}")
    return obj, path


def read_official(path: str | Path) -> Tuple[Dict[str, torch.Tensor], Path]:
    """The file's tensors under wsss names, after checking it is a WS-FCN release."""
    obj, path = _load_raw(path)
    return convert_official(obj), path


def load_official_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strictly load an official-layout dict (already read) into ``model`` (a ``WSFCNModule``)."""
    if not is_official(state):
        raise ValueError(f"{source}: not an official WS-FCN checkpoint; it looks like {describe(state)}")
    converted = convert_official(state)
    target = {k: v for k, v in model.state_dict().items() if k.startswith(("backbone.", "head."))}
    missing = sorted(set(target) - set(converted))
    unexpected = sorted(set(converted) - set(target))
    bad = [(k, tuple(converted[k].shape), tuple(target[k].shape)) for k in sorted(set(target) & set(converted))
           if tuple(converted[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or bad:
        raise ValueError(
            f"{source}: does not fit this WS-FCN model: missing {missing[:5]} ({len(missing)}), unexpected "
            f"{unexpected[:5]} ({len(unexpected)}), shape mismatch {bad[:5]}; the release needs backbone=resnet38d, "
            "method.features={low: b3, final: conv6}, dataset.num_classes=21 and the default method.head "
            "(experiment=wsfcn_voc)")
    for prefix in ("backbone", "head"):
        sub = {k[len(prefix) + 1:]: v for k, v in converted.items() if k.startswith(prefix + ".")}
        getattr(model, prefix).load_state_dict(sub, strict=True)


def load_official_into(model: nn.Module, path: str | Path) -> Path:
    """Read ``model_enc_e018Xs0.905.pth`` (or any file of that layout) and load it strictly into ``model``."""
    obj, file = _load_raw(path)
    load_official_state(model, obj, source=str(file))
    return file


def official_experiment(path: str | Path) -> str:
    """The recipe whose network the release fits (there is one WS-FCN release: VOC12, ResNet-38)."""
    return "wsfcn_voc"
