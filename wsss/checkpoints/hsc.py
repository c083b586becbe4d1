"""Importers for HSC's released model ``HSC_eps_v2.pth`` (Wu0409/HSC_WSSS@402ee60) and EPS's ``checkpoint_cls.pth``
(halbielee/EPS@0c2cdd0), the same network without HSC's extra heads.

Both files are ``torch.save(model.module.state_dict())`` of a ``DataParallel(...).cuda()`` model (HSC
``module/train.py`` ``train_hsc``, EPS ``module/train.py:85``): plain dicts, no ``module.`` prefix (one is stripped
if present), CUDA storages (read with ``map_location='cpu'``). The references load them strictly
(``inference.py:178``, EPS ``infer.py:165``). Key map (explicit, every key accounted for):

=================================================  ==============================================
official (``network/resnet38_eps_seam_hsc.py``)     wsss ``HSCModule`` / ``EPSModule``
=================================================  ==============================================
``conv1a.*``, ``b2*`` ... ``b7.*``, ``bn7.*``       ``backbone.*`` (resnet38d, same names; 228 keys)
``fc8.weight`` (C+1 x 4096, background last)       ``classifier.weight``
``f8_3`` / ``f8_4`` / ``f9`` (HSC only)             ``pcm_mid`` / ``pcm_high`` / ``pcm_fuse``
``proj_fc`` (HSC only)                              ``pixel_proj``
``extra_F.{0,1,3}.*`` (HSC only, 9 keys)            ``region_proj.{0,1,3}.*``
=================================================  ==============================================

HSC: 242 keys; EPS: 229.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Tuple

import torch
from torch import nn

BACKBONE_ROOTS = ("conv1a", "bn7", "b2", "b2_1", "b2_2", "b3", "b3_1", "b3_2", "b4", "b4_1", "b4_2", "b4_3", "b4_4",
                  "b4_5", "b5", "b5_1", "b5_2", "b6", "b7")
EPS_HEADS = {"fc8": "classifier"}
HSC_HEADS = {**EPS_HEADS, "f8_3": "pcm_mid", "f8_4": "pcm_high", "f9": "pcm_fuse", "proj_fc": "pixel_proj",
             "extra_F": "region_proj"}
HSC_SIGNATURE = ("fc8.weight", "f8_3.weight", "f8_4.weight", "f9.weight", "proj_fc.weight", "extra_F.0.weight",
                 "extra_F.3.weight")
RELEASE_FILE = {"hsc": "HSC_eps_v2.pth", "eps": "checkpoint_cls.pth"}


def _strip(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def _keys(obj) -> set:
    return {_strip(str(k)) for k in obj} if isinstance(obj, Mapping) else set()


def is_official(obj) -> bool:
    """An HSC file: the EPS CAM plus HSC's PCM and projectors."""
    return all(k in _keys(obj) for k in HSC_SIGNATURE)


def is_official_eps(obj) -> bool:
    """An EPS file: a resnet38d with a ``fc8`` of C+1 channels (VOC 21, COCO 81) and no other head."""
    ks = _keys(obj)
    if "fc8.weight" not in ks or {k.split(".")[0] for k in ks} != set(BACKBONE_ROOTS) | {"fc8"}:
        return False
    fc8 = next(v for k, v in obj.items() if _strip(str(k)) == "fc8.weight")
    return tuple(fc8.shape[1:]) == (4096, 1, 1) and fc8.shape[0] in (21, 81)


def _looks_like(obj, method: str) -> str:
    """Another method's release, by name, or a description."""
    from wsss.methods.registry import releases

    for name, release in releases().items():
        if name == method:
            continue
        try:
            if release.detect(obj):
                return f"{release.title}; load it with method={name}"
        except Exception:  # noqa: BLE001 - a detector that cannot read this object: not its layout
            continue
    from wsss.inference.loading import describe_checkpoint

    return describe_checkpoint(obj)


def convert_official(state: Mapping[str, torch.Tensor], heads: Mapping[str, str]) -> Dict[str, torch.Tensor]:
    """Official key names -> wsss names (``backbone.*`` and the heads of ``heads``)."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = _strip(str(key))
        root, _, rest = key.partition(".")
        if root in BACKBONE_ROOTS:
            out["backbone." + key] = value
        elif root in heads:
            out[f"{heads[root]}.{rest}"] = value
        else:
            raise KeyError(f"unexpected key '{key}'; the importer knows {sorted(heads)} and {list(BACKBONE_ROOTS)}")
    return out


def _load_raw(path: str | Path, method: str):
    path = Path(path).expanduser()
    release = RELEASE_FILE[method]
    if not path.is_file():
        raise FileNotFoundError(f"{method.upper()} checkpoint not found: {path} (the release file is {release})")
    if path.suffix == ".params":
        raise ValueError(f"{path}: an MXNet .params file (the ResNet-38 ImageNet weights); pass it as "
                         f"backbone.weights=..., not as the {method.upper()} release")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure gets the same explanation
        raise ValueError(f"{path}: cannot be read as a torch state dict ({exc.__class__.__name__}: {exc}); "
                         f"the {method.upper()} release is {release}") from exc
    return obj, path


def load_official_state(model: nn.Module, state: Mapping[str, torch.Tensor], method: str,
                        source: str = "checkpoint") -> None:
    """Strictly load an official-layout dict into ``model`` (``HSCModule`` for ``hsc``, ``EPSModule`` for ``eps``)."""
    detect, heads = (is_official, HSC_HEADS) if method == "hsc" else (is_official_eps, EPS_HEADS)
    if not detect(state):
        raise ValueError(f"{source}: not the {method.upper()} release ({RELEASE_FILE[method]}); it looks like "
                         f"{_looks_like(state, method)}")
    converted = convert_official(state, heads)
    target = model.state_dict()
    target = {k: v for k, v in target.items() if k.startswith("backbone.") or k.split(".")[0] in heads.values()}
    missing = sorted(set(target) - set(converted))
    unexpected = sorted(set(converted) - set(target))
    bad = [(k, tuple(converted[k].shape), tuple(target[k].shape)) for k in sorted(set(target) & set(converted))
           if tuple(converted[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or bad:
        raise ValueError(
            f"{source}: does not fit this {method.upper()} model: missing {missing[:5]} ({len(missing)}), unexpected "
            f"{unexpected[:5]} ({len(unexpected)}), shape mismatch {bad[:5]}; the release needs backbone=resnet38d "
            f"and dataset.num_classes={tuple(state[next(k for k in state if _strip(str(k)) == 'fc8.weight')].shape)[0]}"
            " (experiment=" + ("hsc_voc" if method == "hsc" else "eps_voc") + ")")
    result = model.load_state_dict(converted, strict=False)
    leftover = [k for k in result.missing_keys if k in target]
    if leftover or result.unexpected_keys:
        raise ValueError(f"{source}: incomplete load: missing {leftover[:5]}, unexpected {result.unexpected_keys[:5]}")


def load_official_into(model: nn.Module, path: str | Path) -> Path:
    """Read ``HSC_eps_v2.pth`` (or any file of that layout) and load it strictly into an ``HSCModule``."""
    obj, file = _load_raw(path, "hsc")
    load_official_state(model, obj, "hsc", source=str(file))
    return file


def load_eps_into(model: nn.Module, path: str | Path) -> Path:
    """Read EPS's ``checkpoint_cls.pth`` (or any file of that layout) and load it strictly into an ``EPSModule``."""
    obj, file = _load_raw(path, "eps")
    load_official_state(model, obj, "eps", source=str(file))
    return file


def official_experiment(path: str | Path) -> str:
    """The recipe whose network the HSC release fits (one release: VOC12, ResNet-38)."""
    return "hsc_voc"


def eps_experiment(path: str | Path) -> str:
    return "eps_voc"


def read_official(path: str | Path, method: str = "hsc") -> Tuple[Dict[str, torch.Tensor], Path]:
    obj, file = _load_raw(path, method)
    return convert_official(obj, HSC_HEADS if method == "hsc" else EPS_HEADS), file
