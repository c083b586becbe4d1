"""Importer for the RecurSeed + EdgePredictMix releases (OFRIN/RecurSeed_and_EdgePredictMix@df538e2).

The authors' files are plain state dicts (``torch.save(model.state_dict())``, ``tools/ai/torch_utils.py``
``save_model``) loaded with ``strict=True`` by ``infer_rsepm.py`` / ``infer_seg.py``. Three layouts:

* ``RSEPM`` ResNet-50 (single stage, ``core/networks.py``): 374 tensors, ``model.*`` (the ResNet, torchvision
  names), ``classifier.weight`` (1x1 CAM classifier), ``aspp.*`` and ``decoder.*`` (21 classes, low 256);
* ``DeepLabv3_Plus`` ResNet-101 (multi stage): 679 tensors, ``model.*``, ``aspp.*``, ``decoder.*`` (low 48);
* ``DeepLabv2`` ResNet-101: 632 tensors, ``model.*`` and ``aspp.aspp{1..4}.{weight,bias}`` (summed classifiers).

Key map to wsss (every key accounted for, shapes checked):

================================  =======================================================
official                          wsss
================================  =======================================================
``model.<torchvision key>``       ``backbone.<torchvision key>``
``classifier``                    ``classifier`` (``RecurSeedModule``)
``aspp.aspp{1..4}.{conv,bn}``     ``head.aspp.branches.{0..3}.{0,1}``
``aspp.global_avg_pool.1.*``      ``head.aspp.image_pool.1.{0,1}``
``aspp.block.0.{conv,bn}``        ``head.aspp.project.0.{0,1}``
``decoder.low_block.{conv,bn}``   ``head.decoder.low_block.{0,1}``
``decoder.classifier.{0,2}.*``    ``head.decoder.refine.{0,2}.{0,1}``
``decoder.classifier.4``          ``head.decoder.classifier``
``aspp.aspp{1..4}`` (DeepLabv2)   ``head.aspp.aspp_{1..4}.0``
================================  =======================================================
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Mapping, Optional

import torch
from torch import Tensor, nn

RSEPM, DEEPLABV3PLUS, DEEPLABV2 = "rsepm", "deeplabv3plus", "deeplabv2"
#: tensors per released layout (measured on the reference modules, next_methods.md §3.2)
KEY_COUNTS = {RSEPM: 374, DEEPLABV3PLUS: 679, DEEPLABV2: 632}
TITLES = {RSEPM: "the RecurSeed + EdgePredictMix single-stage release (RSEPM ResNet-50, 374 tensors)",
          DEEPLABV3PLUS: "the RecurSeed + EdgePredictMix DeepLab v3+ ResNet-101 release (679 tensors)",
          DEEPLABV2: "the RecurSeed + EdgePredictMix DeepLab v2 ResNet-101 release (632 tensors)"}
EXPERIMENTS = {RSEPM: "recurseed_voc", DEEPLABV3PLUS: "recurseed_voc_deeplabv3plus",
               DEEPLABV2: "recurseed_voc_deeplabv2"}
#: the same networks with COCO's 81 classes (the authors' COCO DeepLab v3+ file, README.md:107)
COCO_EXPERIMENTS = {RSEPM: "recurseed_coco", DEEPLABV3PLUS: "recurseed_coco_deeplabv3plus"}
_CLASSIFIERS = {RSEPM: "decoder.classifier.4.weight", DEEPLABV3PLUS: "decoder.classifier.4.weight",
                DEEPLABV2: "aspp.aspp1.weight"}


def experiment_of(state: Mapping, layout: str) -> str:
    """The recipe whose network a release fits: the VOC one, or the COCO one for an 81-class classifier."""
    keys = {_strip(str(k)): k for k in state}
    weight = state.get(keys.get(_CLASSIFIERS[layout], ""))
    if weight is not None and int(weight.shape[0]) == 81 and layout in COCO_EXPERIMENTS:
        return COCO_EXPERIMENTS[layout]
    return EXPERIMENTS[layout]

_CONV_BN = {"conv": "0", "bn": "1"}
_RULES = (
    (re.compile(r"^model\."), lambda m: "backbone."),
    (re.compile(r"^classifier\."), lambda m: "classifier."),
    (re.compile(r"^aspp\.aspp([1-4])\.(conv|bn)\."),
     lambda m: f"head.aspp.branches.{int(m.group(1)) - 1}.{_CONV_BN[m.group(2)]}."),
    (re.compile(r"^aspp\.aspp([1-4])\.(?=(weight|bias)$)"), lambda m: f"head.aspp.aspp_{m.group(1)}.0."),
    (re.compile(r"^aspp\.global_avg_pool\.1\.(conv|bn)\."), lambda m: f"head.aspp.image_pool.1.{_CONV_BN[m.group(1)]}."),
    (re.compile(r"^aspp\.block\.0\.(conv|bn)\."), lambda m: f"head.aspp.project.0.{_CONV_BN[m.group(1)]}."),
    (re.compile(r"^decoder\.low_block\.(conv|bn)\."), lambda m: f"head.decoder.low_block.{_CONV_BN[m.group(1)]}."),
    (re.compile(r"^decoder\.classifier\.([02])\.(conv|bn)\."),
     lambda m: f"head.decoder.refine.{m.group(1)}.{_CONV_BN[m.group(2)]}."),
    (re.compile(r"^decoder\.classifier\.4\."), lambda m: "head.decoder.classifier."),
)


def _strip(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def layout_of(obj) -> Optional[str]:
    """Which RS+EPM layout a loaded object has (``rsepm``, ``deeplabv3plus``, ``deeplabv2``), or None."""
    if not isinstance(obj, Mapping) or not obj:
        return None
    keys = {_strip(str(k)) for k in obj}
    if "model.conv1.weight" not in keys or not all(k.startswith(("model.", "aspp.", "decoder.", "classifier."))
                                                   for k in keys):
        return None
    if "aspp.aspp1.weight" in keys and "aspp.aspp1.bias" in keys:
        return DEEPLABV2
    if "decoder.low_block.conv.weight" in keys and "aspp.aspp1.conv.weight" in keys:
        return RSEPM if "classifier.weight" in keys else DEEPLABV3PLUS
    return None


def is_rsepm(obj) -> bool:
    return layout_of(obj) == RSEPM


def is_segmentation_release(obj) -> bool:
    return layout_of(obj) in (DEEPLABV3PLUS, DEEPLABV2)


def convert(state: Mapping[str, Tensor], source: str = "<state dict>") -> Dict[str, Tensor]:
    """Official names -> wsss names; an unknown key is an error."""
    out: Dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        key = _strip(str(key))
        for pattern, repl in _RULES:
            m = pattern.match(key)
            if m:
                out[repl(m) + key[m.end():]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{source}: keys the RecurSeed importer does not know: {unknown[:8]}")
    return out


def other_release(obj) -> str:
    """What a file that is not the expected RS+EPM layout looks like, naming the method that reads it."""
    from wsss.inference.loading import describe_checkpoint
    from wsss.methods.registry import releases

    layout = layout_of(obj)
    if layout is not None:
        return f"{TITLES[layout]}, read with experiment={EXPERIMENTS[layout]}" + (
            " method=recurseed" if layout == RSEPM else " method=deeplab")
    for name, release in releases().items():
        try:
            if release.detect(obj):
                return f"{release.title}: load it with method={name}"
        except Exception:  # noqa: BLE001 - a detector that cannot read this object: ask the next one
            continue
    return describe_checkpoint(obj)


def read(path: str | Path):
    """``torch.load`` of a release file with a clear error for anything unreadable."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"RecurSeed checkpoint not found: {path} (the single-stage release is "
                                "experiments/models/ResNet50@VOC@RS+EPM@Official/last.pth)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure gets the same explanation
        raise ValueError(f"{path}: cannot be read as a torch state dict ({exc.__class__.__name__}: {exc})") from exc


def load_state(model: nn.Module, state: Mapping[str, Tensor], expected: str, source: str = "checkpoint") -> None:
    """Strictly load an RS+EPM state dict of layout ``expected`` into ``model`` (shapes and key sets equal)."""
    if layout_of(state) != expected:
        raise ValueError(f"{source}: not {TITLES[expected]}; it looks like {other_release(state)}")
    mapped = convert(state, source)
    own = model.state_dict()
    wanted = [k for k in own if k.startswith(("backbone.", "head.", "classifier."))]
    missing = sorted(set(wanted) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    bad = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in mapped.items()
           if k in own and own[k].shape != v.shape]
    if missing or unexpected or bad:
        raise ValueError(f"{source}: does not fit this model (build it with experiment={EXPERIMENTS[expected]}): "
                         f"missing {missing[:6]} ({len(missing)}), unexpected {unexpected[:6]} ({len(unexpected)}), "
                         f"shape mismatch {bad[:6]}")
    with torch.no_grad():
        for k, v in mapped.items():
            own[k].copy_(v.to(own[k].dtype))


def load_rsepm_into(model: nn.Module, path: str | Path) -> Path:
    """Read the single-stage ``last.pth`` (374 tensors) and load it strictly into a ``RecurSeedModule``."""
    load_state(model, read(path), RSEPM, str(path))
    return Path(path)


def load_segmentation_into(model: nn.Module, path: str | Path) -> Path:
    """Read a released DeepLab v3+ / v2 ResNet-101 file and load it strictly into a ``DeepLabModule``."""
    state = read(path)
    layout = layout_of(state)
    load_state(model, state, layout if layout in (DEEPLABV3PLUS, DEEPLABV2) else DEEPLABV3PLUS, str(path))
    return Path(path)


def rsepm_experiment(path: str | Path) -> str:
    try:
        state = read(path)
    except (OSError, ValueError):   # unreadable here: the load will explain it
        return EXPERIMENTS[RSEPM]
    return experiment_of(state, RSEPM) if layout_of(state) == RSEPM else EXPERIMENTS[RSEPM]
