"""RecurSeed + EdgePredictMix (RS+EPM, arXiv 2204.06754): the single-stage ``RSEPM`` network.

Network (OFRIN/RecurSeed_and_EdgePredictMix@df538e2 ``core/networks.py`` ``RSEPM``): a ResNet-50 whose layer4
keeps stride 16 undilated (``backbone.dilation_style=recurseed``), a 1x1 bias-free classifier on layer4 giving
the CAMs (``cls_logits`` = their global average), and a DeepLab v3+ head (ASPP 1/6/12/18 + decoder whose
low-level block keeps 256 channels of layer1) predicting 21 channels, background first, at stride 4. The seed
is that decoder's softmax; there is no refinement at test time.

Inference (``infer_rsepm.py --conf_th 0.34``): scales 1/0.5/1.5/2 with ``int()`` sizes of the bilinearly
resized normalised image (``resize=bilinear_int``), flips; the decoder logits resized with **nearest** to the
scaled input, softmax, **nearest** to the image size, the 8 maps averaged (:meth:`multiscale_raw_scores`);
classes kept where the mean sigmoid of the classifier is >= 0.34 (``classes=predicted``, ``cls_threshold``);
each kept map divided by its maximum + 1e-5 (``normalize=max``). The CRF and background of
``convert_seed_to_pseudo_masks.py`` are ``crf=recurseed``.

The training is a reconstruction (the authors never released it): :mod:`wsss.methods.recurseed_losses`,
``docs/recurseed.md``.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wsss.checkpoints import recurseed as recurseed_release
from wsss.models.heads import build_head

from . import recurseed_losses as losses
from .base import WSSSModule
from .contract import OutputSpec
from .registry import Release, register_method

#: ASPP dilations of ASPP_For_DeepLabv3 per output stride (core/layers.py)
ASPP_DILATIONS = {16: (1, 6, 12, 18), 8: (1, 12, 24, 36)}


def aspp_dilations(output_stride: int, given: Optional[Sequence[int]] = None) -> Sequence[int]:
    """The ASPP dilations that follow the backbone's output stride (RS+EPM's rule), unless given."""
    if given is not None:
        return tuple(int(d) for d in given)
    if output_stride not in ASPP_DILATIONS:
        raise ValueError(f"RS+EPM's ASPP is defined for output stride 8 or 16, not {output_stride}; "
                         f"set method.head.dilations explicitly")
    return ASPP_DILATIONS[output_stride]


@register_method
class RecurSeedModule(WSSSModule):
    method_name = "recurseed"
    outputs = (OutputSpec("seg", has_background=False, normalize="max"),   # decoder softmax, fg channels
               OutputSpec("cam", has_background=False, normalize="max"))
    seed_output = "seg"
    score_aggregation = "mean"   # forward_with_scales: torch.mean over the 2 x len(scales) maps
    release = Release(load=recurseed_release.load_rsepm_into, detect=recurseed_release.is_rsepm,
                      experiment=recurseed_release.rsepm_experiment, title=recurseed_release.TITLES["rsepm"])
    recipes = ("recurseed_voc", "recurseed_coco")

    def __init__(self, *args, head: Mapping | None = None, seg_interpolation: str = "nearest",
                 training: Mapping | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.save_hyperparameters()
        spec = dict(head or {})
        final = list(self.backbone.channels)[-1]
        spec["dilations"] = aspp_dilations(int(self.backbone.strides[final]), spec.get("dilations"))
        spec.setdefault("low_channels", 256)   # RSEPM passes feature_size as Decoder's low_channels
        spec.setdefault("width", 256)
        self.head = build_head("deeplabv3plus", self.backbone.channels, self.backbone.strides, self.num_classes, **spec)
        self.classifier = nn.Conv2d(self.backbone.channels[final], self.num_classes - 1, 1, bias=False)
        if seg_interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"method.seg_interpolation must be nearest or bilinear, not {seg_interpolation!r}")
        self.seg_interpolation = seg_interpolation
        self.train_cfg = losses.TrainingConfig.from_config(training)

    # ----- network ------------------------------------------------------------------------
    def network(self, image: torch.Tensor, with_decoder: bool = True) -> Dict[str, torch.Tensor]:
        """RSEPM.forward: ``cams`` (C-1 at stride 16), ``cls_logits`` (their mean), ``seg_logits`` (1+C-1 at
        stride 4, background first), ``features`` (the backbone's levels)."""
        feats = self.backbone(image)
        cams = self.classifier(feats[self.backbone.final_key])
        out = {"cams": cams, "cls_logits": cams.mean(dim=(2, 3)), "features": feats}
        if with_decoder:
            out["seg_logits"] = self.head(feats)
        return out

    def _resize(self, x: torch.Tensor, size, mode: Optional[str] = None) -> torch.Tensor:
        """``torch_utils.resize``: no call when the size is already right; align_corners only for bilinear."""
        mode = mode or self.seg_interpolation
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size=tuple(size), mode=mode, **({} if mode == "nearest" else {"align_corners": False}))

    def seg_probs(self, logits: torch.Tensor, size) -> torch.Tensor:
        """Decoder logits resized to the input (``same=True``) and soft-maxed, as ``RSEPM.forward`` + scales."""
        return torch.softmax(self._resize(logits, size), dim=1)

    def raw_scores(self, image: torch.Tensor, output: Optional[str] = None) -> torch.Tensor:
        name = self.output_spec(output).name
        out = self.network(image, with_decoder=name == "seg")
        if name == "cam":
            return F.relu(out["cams"])
        return self.seg_probs(out["seg_logits"], image.shape[-2:])[:, 1:]

    def image_label_probs(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.network(image, with_decoder=False)["cls_logits"])

    @torch.no_grad()
    def multiscale_raw_scores(self, inputs: Sequence[torch.Tensor], size: Sequence[int], flip: bool = True,
                              aggregation: Optional[str] = None, channels_last: bool = False,
                              output: Optional[str] = None) -> torch.Tensor:
        """``RSEPM.forward_with_scales``: per scale, softmax of the decoder resized (``seg_interpolation``) to the
        scaled input, resized the same way to ``size``, un-flipped; the mean (or sum) over scales and flips.
        The mean sigmoid of the classifier over the same forwards is kept for :meth:`multiscale_class_probs`."""
        name = self.output_spec(output).name
        aggregation = aggregation or self.score_aggregation
        total, probs, count = None, None, 0
        for x in inputs:
            b = x.shape[0]
            batch = torch.cat([x, x.flip(-1)]) if flip else x
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            out = self.network(batch, with_decoder=name == "seg")
            if name == "seg":
                maps = self._resize(self.seg_probs(out["seg_logits"].float(), batch.shape[-2:]), size)[:, 1:]
            else:
                maps = F.interpolate(F.relu(out["cams"]).float(), size=tuple(size), mode="bilinear",
                                     align_corners=False)
            maps = maps[:b] + maps[b:].flip(-1) if flip else maps
            sig = torch.sigmoid(out["cls_logits"].float())
            sig = sig[:b] + sig[b:] if flip else sig
            total = maps if total is None else total + maps
            probs = sig if probs is None else probs + sig
            count += 2 if flip else 1
        self.remember_class_probs(inputs, flip, probs / count)
        return total / count if aggregation == "mean" else total

    # ----- training (a reconstruction: recurseed_losses) ----------------------------------
    def training_losses(self, batch: dict) -> Dict[str, torch.Tensor]:
        return losses.training_losses(self, batch, self.train_cfg, int(self.current_epoch))

    # ----- checkpoints --------------------------------------------------------------------
    def load_official(self, path: str) -> None:
        recurseed_release.load_rsepm_into(self, path)
