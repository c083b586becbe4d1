"""Importer for the DeepLab v2 second-stage models released with RTC and HSC.

Both train Yude Wang's ``deeplabv2`` (semantic-segmentation-codebase; e.g. HSC's
``deeplabv2_resnet101_VOCDataset_itr20000_all.pth``), saved with ``torch.save(net.state_dict())``
(a ``module.`` prefix is stripped when present). The key map to ``experiment=deeplabv2_voc``'s
:class:`~wsss.methods.deeplab.DeepLabModule` (every key accounted for, shapes checked):

=============================  ==========================================
official                       wsss ``DeepLabModule``
=============================  ==========================================
``backbone.conv1.{0,1,3,4,6}``  ``backbone.conv1.conv1.{0,1,3,4,6}``
``backbone.bn1``               ``backbone.conv1.bn1``
``backbone.layer{1..4}``       ``backbone.res{2..5}``
``aspp.branch{1..4}.{0,1}``    ``head.aspp.branches.{0..3}.{0,1}``
``aspp.branch5_conv``          ``head.aspp.image_pool.1.0``
``aspp.branch5_bn``            ``head.aspp.image_pool.1.1``
``aspp.conv_cat.{0,1}``        ``head.aspp.project.0.{0,1}``
``cls_conv``                   ``head.classifier``
=============================  ==========================================
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Mapping

import torch
from torch import Tensor, nn

from .imagenet import WeightsFormatError, describe_state_dict, read_weights_file

_RULES = (
    (re.compile(r"^backbone\.conv1\.(\d)\."), lambda m: f"backbone.conv1.conv1.{m.group(1)}."),
    (re.compile(r"^backbone\.bn1\."), lambda m: "backbone.conv1.bn1."),
    (re.compile(r"^backbone\.layer(\d)\."), lambda m: f"backbone.res{int(m.group(1)) + 1}."),
    (re.compile(r"^aspp\.branch([1-4])\.(\d)\."), lambda m: f"head.aspp.branches.{int(m.group(1)) - 1}.{m.group(2)}."),
    (re.compile(r"^aspp\.branch5_conv\."), lambda m: "head.aspp.image_pool.1.0."),
    (re.compile(r"^aspp\.branch5_bn\."), lambda m: "head.aspp.image_pool.1.1."),
    (re.compile(r"^aspp\.conv_cat\.(\d)\."), lambda m: f"head.aspp.project.0.{m.group(1)}."),
    (re.compile(r"^cls_conv\."), lambda m: "head.classifier."),
)


def convert_yude_deeplabv2(sd: Mapping[str, Tensor], source: str = "<state dict>") -> Dict[str, Tensor]:
    """Rename an official DeepLab v2 state dict to wsss names; unknown keys are an error."""
    out: Dict[str, Tensor] = {}
    unknown = []
    for key, value in sd.items():
        key = key[len("module."):] if key.startswith("module.") else key
        for pattern, repl in _RULES:
            m = pattern.match(key)
            if m:
                out[repl(m) + key[m.end():]] = value
                break
        else:
            unknown.append(key)
    if unknown or not out:
        raise WeightsFormatError(
            f"{source}: not a DeepLab v2 model of RTC / HSC (Yude Wang's deeplabv2); it looks like "
            f"{describe_state_dict(sd)}; keys the importer does not know: {unknown[:8]}")
    return out


def load_deeplabv2_release(module: nn.Module, path: str | Path) -> None:
    """Load an official RTC / HSC DeepLab v2 ``.pth`` into a DeepLabModule built by ``experiment=deeplabv2_voc``,
    or a RecurSeed DeepLab v3+ / v2 file (``experiment=recurseed_voc_deeplab*``, :mod:`wsss.checkpoints.recurseed`)."""
    from . import recurseed

    sd, _fmt = read_weights_file(path)
    if recurseed.is_segmentation_release(sd):
        recurseed.load_state(module, sd, recurseed.layout_of(sd), str(path))
        return
    mapped = convert_yude_deeplabv2(sd, str(path))
    own = module.state_dict()
    missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in mapped if k not in own]
    mismatched = [f"{k} file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in mapped.items()
                  if k in own and own[k].shape != v.shape]
    if missing or unexpected or mismatched:
        raise WeightsFormatError(
            f"{path}: does not match this DeepLab configuration (build it with experiment=deeplabv2_voc): "
            f"missing {missing[:6]}, unexpected {unexpected[:6]}, shape mismatch {mismatched[:6]}")
    with torch.no_grad():
        for k, v in mapped.items():
            own[k].copy_(v.to(own[k].dtype))


def is_official(obj) -> bool:
    """Whether a loaded object has a release's key layout: RTC / HSC (``cls_conv`` classifier, ``aspp.branch*``)
    or RecurSeed's DeepLab v3+ / v2."""
    from . import recurseed

    if not isinstance(obj, Mapping):
        return False
    if recurseed.is_segmentation_release(obj):
        return True
    keys = {k[len("module."):] if k.startswith("module.") else k for k in map(str, obj)}
    return "cls_conv.weight" in keys and any(k.startswith("aspp.branch1.") for k in keys)


def official_experiment(path: str | Path) -> str:
    """The recipe whose network a release fits: RecurSeed's DeepLab v3+ / v2 files their
    ``recurseed_voc_deeplab*`` recipes, anything else RTC's and HSC's ResNet-101 DeepLab v2 (``deeplabv2_voc``)."""
    from . import recurseed

    try:
        sd, _fmt = read_weights_file(path)
    except Exception:  # noqa: BLE001 - unreadable here: the load will explain it
        return "deeplabv2_voc"
    layout = recurseed.layout_of(sd)
    return recurseed.experiment_of(sd, layout) if layout in (recurseed.DEEPLABV3PLUS, recurseed.DEEPLABV2) \
        else "deeplabv2_voc"
