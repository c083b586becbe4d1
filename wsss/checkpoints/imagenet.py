"""Load ImageNet (or other pre-trained) weights into a backbone from a local file.

Accepted, detected from the file and the target backbone (never by file name):

============================  ==========================================  =========================
file                          where it comes from                         target backbone
============================  ==========================================  =========================
torchvision ``.pth``          ``resnet{18,50,101}-*.pth``                  resnet18/50/101
ResNet-38 ``.pth``            1-stage-wseg / ws-fcn download, or           resnet38d
                              ``scripts/convert_mxnet_params.py``
MXNet ``.params``             ``ilsvrc-cls_rna-a1_cls1000_ep-0001.params``  resnet38d
                              (RTC / SEAM / PSA / HSC), read directly
deep-stem ``.pth``            EMANet ``resnet-101-cuhk.pth`` (SPML),       resnet{50,101}_deepstem
                              PyTorch-Encoding ``resnet101s`` (RTC / HSC
                              DeepLab v2): ``conv1.N / bn1 / layerK``
SPML release / checkpoint     ``embedding_model.resnet_backbone.*``        resnet{50,101}_deepstem
any of the above wrapped      ``{'state_dict': ...}``, ``module.`` /       the same
                              ``backbone.`` prefixes
============================  ==========================================  =========================

ImageNet classifiers (``fc.*``, ``linear1000``) are ignored. Every other mismatch is reported by
name: keys of the backbone the file lacks (missing), keys of the file the backbone lacks
(unexpected, loaded nowhere), and shape mismatches. With ``strict=True`` a missing or mismatched
backbone weight is an error, since training would start from a random layer without telling
anyone. A file of another architecture, a truncated file or an unknown format raises
:class:`WeightsFormatError` naming the file and what it looks like.
"""
from __future__ import annotations

import logging
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from .mxnet import MXNetFormatError, is_mxnet_params, load_resnet38d_params

log = logging.getLogger(__name__)

CLASSIFIER_PREFIXES = ("fc.", "linear1000", "classifier.")
_PREFIXES = ("", "module.", "backbone.", "model.backbone.", "module.backbone.", "net.backbone.", "encoder.",
             "resnet_backbone.", "embedding_model.resnet_backbone.", "model.", "net.")


class WeightsFormatError(ValueError):
    """A weights file that cannot initialise the requested backbone."""


@dataclass
class LoadReport:
    source: str
    file_format: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.source} ({self.file_format}): {len(self.loaded)} tensors loaded"]
        if self.missing:
            lines.append(f"  missing (left uninitialised): {_short(self.missing)}")
        if self.mismatched:
            lines.append("  shape mismatch: " + _short([f"{k} file {tuple(a)} vs backbone {tuple(b)}"
                                                        for k, a, b in self.mismatched]))
        if self.unexpected:
            lines.append(f"  unexpected (not in the backbone, skipped): {_short(self.unexpected)}")
        if self.ignored:
            lines.append(f"  ignored classifier: {_short(self.ignored)}")
        return "\n".join(lines)


def _short(items: List[str], n: int = 12) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


# ----------------------------------------------------------------------------------------- reading


def read_weights_file(path: str | Path) -> Tuple[Dict[str, Tensor], str]:
    """Tensors of a weights file, flattened to ``name -> Tensor``, and a word on its format."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (weights are never downloaded; "
                                "give a local path in backbone.weights)")
    with open(path, "rb") as f:
        head = f.read(16)
    if is_mxnet_params(path):
        try:
            return dict(load_resnet38d_params(path)), "MXNet .params (ResNet-38 ImageNet)"
        except MXNetFormatError as e:
            raise WeightsFormatError(str(e)) from e
    is_zip = head.startswith(b"PK\x03\x04")
    is_pickle = head[:1] == b"\x80"
    if not (is_zip or is_pickle):
        raise WeightsFormatError(
            f"{path}: unknown weights format (first bytes {head[:8].hex()}): neither a PyTorch .pth "
            "(zip or pickle) nor an MXNet .params file")
    if is_zip and not zipfile.is_zipfile(path):
        raise WeightsFormatError(f"{path}: looks like a PyTorch zip .pth but its zip directory is missing: "
                                 "the file is truncated or corrupt; download it again")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        kind = "zip" if is_zip else "legacy pickle"
        raise WeightsFormatError(
            f"{path}: looks like a PyTorch {kind} .pth but cannot be read with weights_only=True "
            f"(truncated, corrupt, or holding non-tensor objects): {type(e).__name__}: {e}") from e
    flat = _flatten(obj)
    if not flat:
        raise WeightsFormatError(f"{path}: a PyTorch file without tensors ({type(obj).__name__}); "
                                 "not a weights file")
    return flat, "PyTorch .pth"


def _flatten(obj, prefix: str = "") -> Dict[str, Tensor]:
    """Nested dicts of tensors -> dotted names; a Lightning-style ``state_dict`` entry wins."""
    if isinstance(obj, Mapping):
        if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
            return _flatten(obj["state_dict"], prefix)
        out: Dict[str, Tensor] = {}
        for k, v in obj.items():
            if isinstance(v, Tensor):
                out[prefix + str(k)] = v
            elif isinstance(v, Mapping):
                out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {}


# ------------------------------------------------------------------------------------- describing


def _block_counts(keys, layer_fmt: str, first: int) -> Tuple[int, ...]:
    """Number of residual blocks in each of the four stages named ``layer_fmt.format(first + i)``."""
    counts = []
    for i in range(first, first + 4):
        pat = re.compile(re.escape(layer_fmt.format(i)) + r"(\d+)\.")
        counts.append(len({int(m.group(1)) for k in keys for m in [pat.match(k)] if m}))
    return tuple(counts)


_DEPTHS = {((2, 2, 2, 2), False): 18, ((3, 4, 6, 3), False): 34, ((3, 4, 6, 3), True): 50,
           ((3, 4, 23, 3), True): 101, ((3, 8, 36, 3), True): 152}


def describe_state_dict(sd: Mapping[str, Tensor]) -> str:
    """What architecture a flat state dict looks like, in words (for error messages)."""
    keys = list(sd)
    stripped = {re.sub(r"^(module\.|backbone\.|model\.|embedding_model\.)+", "", k): v for k, v in sd.items()}
    sk = set(stripped)
    if "conv1a.weight" in sk or "b2.conv_branch2a.weight" in sk:
        extra = [k for k in sk if not re.match(r"^(conv1a|b\d(_\d+)?|bn7)\.", k)]
        return "a ResNet-38 (resnet38d) state dict" + (" with extra heads (a trained RTC/SEAM/HSC-style model)"
                                                        if extra else "")
    layouts = (("layer{}.", 1, "conv1.weight", "torchvision ResNet"),
               ("layer{}.", 1, "conv1.0.weight",
                "deep-stem ResNet (EMANet resnet-101-cuhk / PyTorch-Encoding resnet101s layout)"),
               ("resnet_backbone.res{}.", 2, "resnet_backbone.conv1.conv1.0.weight", "SPML deep-stem ResNet"),
               ("res{}.", 2, "conv1.conv1.0.weight", "wsss deep-stem ResNet"))
    for layer_fmt, first, stem_key, what in layouts:
        if stem_key not in sk:
            continue
        bottleneck = any(k.startswith(layer_fmt.format(first) + "0.conv3") for k in sk)
        counts = _block_counts(sk, layer_fmt, first)
        depth = _DEPTHS.get((counts, bottleneck), "?")
        return f"a {what}-{depth} state dict (blocks per stage {counts})"
    if any(k.startswith("features.") for k in sk):
        return "a VGG-style state dict (features.*)"
    return f"an unknown architecture (first keys: {', '.join(keys[:5])})"


# ---------------------------------------------------------------------------------------- mapping


def _deepstem_rename(key: str) -> str:
    """EMANet / PyTorch-Encoding names -> wsss (SPML) deep-stem names, as SPML's ``name_mapping``."""
    if key.startswith("conv1.") and not key.startswith("conv1.conv1.") and not key.startswith("conv1.bn1."):
        return "conv1." + key
    if key.startswith("bn1."):
        return "conv1." + key
    m = re.match(r"^layer(\d)\.(.*)$", key)
    if m:
        return f"res{int(m.group(1)) + 1}.{m.group(2)}"
    return key


def _renamer_for(model: nn.Module) -> Callable[[str], str]:
    from wsss.models.backbones.resnet_deepstem import ResNetDeepStem

    if isinstance(model, ResNetDeepStem):
        return _deepstem_rename
    return lambda k: k


def map_to_backbone(model: nn.Module, sd: Mapping[str, Tensor]) -> Tuple[Dict[str, Tensor], List[str]]:
    """Pick the prefix and renaming that match the most backbone keys; return (mapped, leftovers)."""
    own = set(model.state_dict())
    rename = _renamer_for(model)
    best: Tuple[int, Dict[str, Tensor], List[str]] = (-1, {}, list(sd))
    for prefix in _PREFIXES:
        mapped, rest = {}, []
        for k, v in sd.items():
            if k.startswith(prefix):
                mapped[rename(k[len(prefix):])] = v
            else:
                rest.append(k)
        hits = len(own.intersection(mapped))
        if hits > best[0]:
            best = (hits, mapped, rest)
    return best[1], best[2]


# ---------------------------------------------------------------------------------------- loading


def check_state_dict(model: nn.Module, sd: Mapping[str, Tensor], source: str = "<state dict>",
                     strict: bool = True, file_format: str = "state dict",
                     looks_like: Optional[str] = None) -> LoadReport:
    """Compare ``sd`` (already mapped to the backbone's names) with ``model``; raise if strict and incomplete.

    ``looks_like`` describes the file as it was on disk (before renaming) for the error message."""
    own = model.state_dict()
    looks_like = looks_like or describe_state_dict(sd)
    report = LoadReport(source=source, file_format=file_format)
    for k, v in sd.items():
        if k in own:
            if tuple(own[k].shape) != tuple(v.shape):
                report.mismatched.append((k, tuple(v.shape), tuple(own[k].shape)))
            else:
                report.loaded.append(k)
        elif k.startswith(CLASSIFIER_PREFIXES) or k.endswith("num_batches_tracked"):
            report.ignored.append(k)
        else:
            report.unexpected.append(k)
    report.missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    if not report.loaded:
        raise WeightsFormatError(
            f"{source}: none of the {len(own)} weights of backbone {type(model).__name__} "
            f"({describe_state_dict(own)}) is in this file, which looks like {looks_like}; "
            "pick the matching backbone or file")
    if strict and (report.missing or report.mismatched):
        raise WeightsFormatError(
            f"{source}: the file does not initialise the whole backbone {type(model).__name__} "
            f"({describe_state_dict(own)}); the file looks like {looks_like}.\n{report.summary()}\n"
            "Set backbone.strict=false to train with these layers left at their random init.")
    return report


def load_backbone_weights(model: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Load a weights file into ``model`` in place (see the module docstring for what is accepted)."""
    sd, fmt = read_weights_file(path)
    mapped, leftovers = map_to_backbone(model, sd)
    report = check_state_dict(model, mapped, source=str(path), strict=strict, file_format=fmt,
                              looks_like=describe_state_dict(sd))
    report.unexpected += [k for k in leftovers if not k.startswith(CLASSIFIER_PREFIXES)]
    report.ignored += [k for k in leftovers if k.startswith(CLASSIFIER_PREFIXES)]
    good = {k: mapped[k] for k in report.loaded}
    own = model.state_dict()
    with torch.no_grad():
        for k, v in good.items():
            own[k].copy_(v.to(dtype=own[k].dtype))
    level = logging.WARNING if (report.missing or report.mismatched or report.unexpected) else logging.INFO
    log.log(level, report.summary())
    return report
