"""Importer for RTC's released model ``rtc_contrast_best.pth`` (ChunyanWang1/RTC @ 9c777e0).

The file is ``torch.save(model.module.state_dict())`` of ``network/resnet38_contrast.py`` ``Net``: a
plain dict of 248 tensors with CUDA storages (read with ``map_location='cpu'``). Key map (explicit,
every key accounted for; a ``module.`` prefix from an unwrapped DataParallel is stripped):

==========================================  ==========================================================
official                                    wsss ``RTCModule``
==========================================  ==========================================================
``conv1a.*``, ``b2*`` ... ``b7.*``, ``bn7.*``  ``backbone.*`` (resnet38d, same names)
``proj1`` / ``classifier1``                 ``head.cam_proj`` / ``head.cam_classifier``
``f8_3`` / ``f8_4`` / ``f8_5``              ``head.fcm_mid`` / ``head.fcm_high`` / ``head.fcm_final``
``f9_1`` / ``f9_2``                         ``head.fcm_deep`` / ``head.fcm_shallow``
``fc8_seg_conv1`` / ``fc8_seg_conv2``       ``head.seg_aspp1`` / ``head.seg_aspp2``
``fc8_seg_conv3`` / ``4`` / ``5``           ``head.seg_local`` / ``head.seg_fuse`` / ``head.seg_low``
``proj2`` / ``classifier2``                 ``head.seg_proj`` / ``head.seg_classifier``
``fc8.weight``                              dropped (shape-checked): declared but never called by the
                                            reference ``forward``
``_aff.aff_{x,m,std}.kernel``               dropped (shape-checked): constant PAMR shift kernels of a
                                            module the reference never runs
==========================================  ==========================================================
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Tuple

import torch
from torch import nn

HEAD_MAP = {
    "proj1": "cam_proj", "classifier1": "cam_classifier",
    "f8_3": "fcm_mid", "f8_4": "fcm_high", "f8_5": "fcm_final", "f9_1": "fcm_deep", "f9_2": "fcm_shallow",
    "fc8_seg_conv1": "seg_aspp1", "fc8_seg_conv2": "seg_aspp2", "fc8_seg_conv3": "seg_local",
    "fc8_seg_conv4": "seg_fuse", "fc8_seg_conv5": "seg_low", "proj2": "seg_proj", "classifier2": "seg_classifier",
}
DROPPED = {"fc8.weight": (4096, 4352, 1, 1), "_aff.aff_x.kernel": (8, 1, 3, 3),
           "_aff.aff_m.kernel": (8, 1, 3, 3), "_aff.aff_std.kernel": (9, 1, 3, 3)}
BACKBONE_ROOTS = ("conv1a", "bn7", "b2", "b2_1", "b2_2", "b3", "b3_1", "b3_2", "b4", "b4_1", "b4_2", "b4_3", "b4_4",
                  "b4_5", "b5", "b5_1", "b5_2", "b6", "b7")
SIGNATURE = ("proj1.weight", "classifier1.weight", "classifier2.weight", "fc8_seg_conv1.weight", "f9_1.weight")


def _strip(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def describe(obj) -> str:
    """What a loaded checkpoint object looks like, for error messages."""
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
                f"(ckpt=..., with method={name}), not as an official RTC file")
    if {"fca.conv1.weight", "align1.flow_make.weight"} <= ks:
        return "the WS-FCN release (model_enc_e018Xs0.905.pth); load it with method=wsfcn"
    if "model" in keys and isinstance(obj.get("model"), Mapping):
        return "a wrapped checkpoint {'model': state_dict, ...} (ws-fcn / 1-stage-wseg style), not RTC"
    if any(k.startswith(("conv1a.", "b2.")) for k in ks):
        heads = sorted({k.split(".")[0] for k in ks} - set(BACKBONE_ROOTS))
        if not heads:
            return "a plain resnet38d (ImageNet) state dict without RTC's heads; use it as backbone.weights"
        if "f9.weight" in ks and "proj1.weight" not in ks:
            return f"a SEAM-style ResNet-38 checkpoint (heads {heads}); not RTC"
        return f"a ResNet-38 checkpoint with heads {heads}, not RTC's {sorted(HEAD_MAP)}"
    if any(k.startswith(("layer1.", "conv1.", "resnet_backbone.", "backbone.")) for k in ks):
        return "a ResNet/DeepLab-style state dict, not RTC's ResNet-38"
    return f"a dict with keys {keys[:6]}"


def is_official(obj) -> bool:
    return isinstance(obj, Mapping) and all(k in {_strip(str(x)) for x in obj} for k in SIGNATURE)


def convert_official(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official key names -> wsss ``RTCModule`` state-dict names (backbone + head)."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = _strip(key)
        if key in DROPPED:
            if tuple(value.shape) != DROPPED[key]:
                raise ValueError(f"official RTC key {key} has shape {tuple(value.shape)}, expected {DROPPED[key]}")
            continue
        root, _, rest = key.partition(".")
        if root in BACKBONE_ROOTS:
            out["backbone." + key] = value
        elif root in HEAD_MAP:
            out[f"head.{HEAD_MAP[root]}.{rest}"] = value
        else:
            raise KeyError(f"unexpected key '{key}' in an RTC checkpoint; the importer knows {sorted(HEAD_MAP)}, "
                           f"{list(BACKBONE_ROOTS)} and {sorted(DROPPED)}")
    return out


def _load_raw(path: str | Path):
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"RTC checkpoint not found: {path} (the release file is rtc_contrast_best.pth)")
    if path.suffix == ".params":
        raise ValueError(f"{path}: an MXNet .params file (the ResNet-38 ImageNet weights); pass it as "
                         "backbone.weights=..., not as an RTC checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure gets the same explanation
        raise ValueError(f"{path}: cannot be read as a torch state dict ({exc.__class__.__name__}: {exc}); "
                         "the RTC release is rtc_contrast_best.pth") from exc
    if not is_official(obj):
        raise ValueError(f"{path}: not an official RTC checkpoint (expects {list(SIGNATURE)}); it looks like "
                         f"{describe(obj)}")
    return obj, path


def read_official(path: str | Path) -> Tuple[Dict[str, torch.Tensor], Path]:
    """The file's tensors under wsss names, after checking it is an RTC release."""
    obj, path = _load_raw(path)
    return convert_official(obj), path


def load_official_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strictly load an official-layout dict (already read) into ``model`` (an ``RTCModule``)."""
    if not is_official(state):
        raise ValueError(f"{source}: not an official RTC checkpoint; it looks like {describe(state)}")
    converted = convert_official(state)
    target = {k: v for k, v in model.state_dict().items() if k.startswith(("backbone.", "head."))}
    missing = sorted(set(target) - set(converted))
    unexpected = sorted(set(converted) - set(target))
    bad = [(k, tuple(converted[k].shape), tuple(target[k].shape)) for k in sorted(set(target) & set(converted))
           if tuple(converted[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or bad:
        raise ValueError(
            f"{source}: does not fit this RTC model: missing {missing[:5]} ({len(missing)}), unexpected "
            f"{unexpected[:5]} ({len(unexpected)}), shape mismatch {bad[:5]}; the release needs backbone=resnet38d, "
            "dataset.num_classes=21 and the default method.head sizes")
    for prefix in ("backbone", "head"):
        sub = {k[len(prefix) + 1:]: v for k, v in converted.items() if k.startswith(prefix + ".")}
        getattr(model, prefix).load_state_dict(sub, strict=True)


def load_official_into(model: nn.Module, path: str | Path) -> Path:
    """Read ``rtc_contrast_best.pth`` (or any file of that layout) and load it strictly into ``model``."""
    obj, file = _load_raw(path)
    load_official_state(model, obj, source=str(file))
    return file


def official_experiment(path: str | Path) -> str:
    """The recipe whose network the release fits (there is one RTC release: VOC12, ResNet-38)."""
    return "rtc_voc"
