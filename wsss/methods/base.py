"""WSSSModule: what every method shares (metrics, optimisation, the dense prediction API).

A method implements ``training_step`` (through :meth:`training_losses`) and :meth:`raw_scores`, and declares
its dense outputs (``outputs``, :class:`~wsss.methods.contract.OutputSpec`) and which one is its seed
(``seed_output``). Everything downstream (validation, ``wsss.infer``, ``wsss.pseudo_label``) goes through:

* ``raw_scores(image, output) -> B x K x h x w``: additive per-class evidence (e.g. ReLU'd CAMs, probabilities),
  any resolution; ``K`` is ``1+C`` when the output has a background channel, else ``C``;
* ``multiscale_raw_scores(inputs, size, flip, ...)``: those resized to the image size and **summed** (or
  averaged, ``score_aggregation``) over scales and flips, as the seed repos do; a method whose reference
  combines scales differently overrides it;
* ``foreground_scores(raw, output) -> B x C x H x W`` (what ``scores/ID.npy`` stores) and
  ``finalize_scores(raw, output) -> B x (1+C) x H x W`` (background first: the output's own, else the method's
  background rule, :attr:`background`).

``scores(image)`` is the seed output at a single scale. The registry of methods (importers, release detection,
recipes, tools) is :mod:`wsss.methods.registry`; ``docs/adding_a_method.md`` walks through a new method.
"""
from __future__ import annotations

import json
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from wsss.inference.multiscale import combine_scales
from wsss.metrics import SegmentationIoU
from wsss.models.backbones import build_backbone
from wsss.optim import optimizers_for, param_groups, paramwise_config
from wsss.postprocess.background import BackgroundRule, background_rule

from .cam_ops import restrict_to_labels
from .contract import OutputSpec
from .registry import Release

INFERENCE_DEFAULTS = {
    "scales": [1.0],          # input scales of multi-scale inference
    "flip": False,            # add horizontally flipped inputs
    "resize": "pil_bicubic",  # pil_bicubic (PSA/SEAM/RTC data loaders, round(W*s)) | bilinear (torch, float image)
                              # | cv2_bilinear (SPML: cv2 INTER_LINEAR on the float image, int(W*s))
                              # | bilinear_int (RecurSeed: torch bilinear on the float image, int(W*s))
    "classes": "label",       # classes stored in scores/ID.npy: label (image-level label) | all
                              # | predicted (the method's classifier: multiscale_class_probs >= cls_threshold)
                              # | peak (classes, background included, whose maximum score >= cls_threshold)
    "pred_with_labels": None,  # restrict pred/ID.png to labelled classes (None: eval_with_labels)
    "crf": "none",            # conf/crf preset applied by wsss.infer when crf= is not given
    "cls_threshold": 0.5,     # wsss.predict / classes=predicted: a class is in the image at this probability
    "pad_size": None,         # [H, W]: methods that pad every view centred to a fixed canvas (WS-FCN's TEST.PAD_SIZE)
}


def inference_recipe(inference: Mapping | None, eval_with_labels: bool) -> dict:
    """The method's own inference defaults (``method.inference``), completed; unknown keys are errors."""
    recipe = dict(INFERENCE_DEFAULTS)
    unknown = set(inference or {}) - set(recipe)
    if unknown:
        raise ValueError(f"method.inference: unknown keys {sorted(unknown)}; known: {sorted(recipe)}")
    recipe.update({k: (list(v) if k == "scales" else v) for k, v in dict(inference or {}).items()})
    if recipe["pred_with_labels"] is None:
        recipe["pred_with_labels"] = bool(eval_with_labels)
    check_recipe_values(recipe, "method.inference")
    if recipe["pad_size"] is not None:
        recipe["pad_size"] = [int(s) for s in recipe["pad_size"]]
        if len(recipe["pad_size"]) != 2 or min(recipe["pad_size"]) < 1:
            raise ValueError(f"method.inference.pad_size must be [height, width], not {recipe['pad_size']}")
    return recipe


RESIZE_RULES = ("pil_bicubic", "bilinear", "cv2_bilinear", "bilinear_int")
CLASS_MODES = ("label", "all", "predicted", "peak")


def _inputs_key(inputs: Sequence[torch.Tensor], flip: bool) -> tuple:
    """Which pyramid a remembered result belongs to (the same tensors, the same flip)."""
    return (bool(flip),) + tuple((x.data_ptr(), tuple(x.shape)) for x in inputs)


def check_recipe_values(recipe: Mapping, where: str) -> None:
    """Unknown resize rules or class modes are errors before any image is read."""
    if recipe["resize"] not in RESIZE_RULES:
        raise ValueError(f"{where}.resize must be one of {RESIZE_RULES}, not {recipe['resize']!r}")
    if recipe["classes"] not in CLASS_MODES:
        raise ValueError(f"{where}.classes must be one of {CLASS_MODES}, not {recipe['classes']!r}")


class WSSSModule(pl.LightningModule):
    """Base LightningModule; subclasses add networks and losses and register with
    :func:`wsss.methods.registry.register_method`."""

    #: the name of ``method=NAME``, recorded in checkpoints
    method_name = "base"
    #: the authors' released checkpoint: importer, key-layout detector, recipe (None: no release)
    release: Optional[Release] = None
    #: published recipes (``conf/experiment`` names) of this method
    recipes: Tuple[str, ...] = ()
    #: extra tools: a CLI key (e.g. ``retrieval_memory``) -> the name of the method that takes its file
    tools: Mapping[str, str] = {}

    def __init__(self, backbone: Mapping, num_classes: int, class_names: Sequence[str] | None = None,
                 bg: Mapping | None = None, optim: Mapping | None = None, scheduler: Mapping | None = None,
                 eval_with_labels: bool = True, log_images: int = 4, inference: Mapping | None = None,
                 val_multiscale: bool = False, track_train_seeds: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.bg = dict(bg or {"rule": "threshold", "threshold": 0.2})
        if self.background.learned and not self.output_spec().has_background:
            raise ValueError(f"method.bg.rule=learned, but the seed output '{self.seed_output}' of method "
                             f"'{self.method_name}' has no background channel; use rule threshold or power")
        self.optim_cfg = dict(optim or {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4})
        paramwise_config(self.optim_cfg.get("paramwise"))  # unknown keys fail at build, not at fit
        self.sched_cfg = dict(scheduler or {"name": "poly", "power": 0.9})
        self.eval_with_labels = eval_with_labels
        self.log_images = log_images
        self.inference = inference_recipe(inference, eval_with_labels)
        self.val_multiscale = bool(val_multiscale)
        self.backbone = build_backbone(**dict(backbone))
        self.val_iou = SegmentationIoU(num_classes, self.class_names)
        #: seed mIoU on the first N training images at every validation (the number WSSS papers report);
        #: engine.build_datamodule gives the datamodule a second validation loader for them
        self.track_train_seeds = int(track_train_seeds)
        self.train_seed_iou = SegmentationIoU(num_classes, self.class_names) if self.track_train_seeds else None
        self.last_train_seed_metrics: Dict[str, object] = {}
        self.last_val_metrics: Dict[str, object] = {}
        #: the global step ``last_val_metrics`` were computed at (``engine.fit`` validates again if it is stale)
        self.last_val_step: Optional[int] = None
        self._val_examples: List[dict] = []

    # ----- dense prediction API -----------------------------------------------------------
    #: the dense outputs this method can export, and the one its seeds (``scores``, validation) come from
    outputs: Tuple[OutputSpec, ...] = (OutputSpec("cam", has_background=False, normalize="max"),)
    seed_output = "cam"
    #: how multi-scale + flip raw scores combine: "sum" (SEAM / PSA CAMs) or "mean" (probabilities)
    score_aggregation = "sum"

    def output_spec(self, output: Optional[str] = None) -> OutputSpec:
        """The declared output ``output`` (None: the seed output)."""
        name = output or self.seed_output
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise ValueError(f"method '{self.method_name}' has no output '{name}'; it has "
                         f"{[o.name for o in self.outputs]} (seed: {self.seed_output})")

    @property
    def background(self) -> BackgroundRule:
        """The configured background rule (``method.bg``) as its typed object."""
        return background_rule(self.bg)

    def raw_scores(self, image: torch.Tensor, output: Optional[str] = None) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def multiscale_raw_scores(self, inputs: Sequence[torch.Tensor], size: Sequence[int], flip: bool = True,
                              aggregation: Optional[str] = None, channels_last: bool = False,
                              output: Optional[str] = None) -> torch.Tensor:
        """Raw scores of ``output`` at ``size``, combined over the scales in ``inputs`` and their mirrors
        (:func:`wsss.inference.multiscale.combine_scales`; ``aggregation`` None: ``score_aggregation``)."""
        self.output_spec(output)  # an undeclared output is an error, not the seed's scores
        return combine_scales(lambda x: self.raw_scores(x, output), inputs, size, flip,
                              aggregation or self.score_aggregation, channels_last)

    def image_label_probs(self, image: torch.Tensor) -> Optional[torch.Tensor]:
        """``B x C-1`` probabilities that each foreground class is in the image, from the method's own classifier;
        None for methods without one (``wsss.predict`` then restricts nothing)."""
        return None

    def remember_class_probs(self, inputs: Sequence[torch.Tensor], flip: bool, probs: torch.Tensor) -> None:
        """Keep the image-level probabilities a method's :meth:`multiscale_raw_scores` computed from its own forwards
        (RecurSeed's mean sigmoid, WS-FCN's max over padded views), so :meth:`multiscale_class_probs` on the same
        inputs returns them instead of running the network again."""
        self._class_probs_cache = (_inputs_key(inputs, flip), probs)

    @torch.no_grad()
    def multiscale_class_probs(self, inputs: Sequence[torch.Tensor], flip: bool = True) -> torch.Tensor:
        """``B x C-1`` image-level probabilities for ``inference.classes=predicted``: those remembered by the last
        :meth:`multiscale_raw_scores` on the same inputs, else the mean of :meth:`image_label_probs` over the scales
        in ``inputs`` and their mirrors."""
        cached = getattr(self, "_class_probs_cache", None)
        if cached is not None and cached[0] == _inputs_key(inputs, flip):
            return cached[1]
        total, count = None, 0
        for x in inputs:
            for view in ((x, x.flip(-1)) if flip else (x,)):
                probs = self.image_label_probs(view)
                if probs is None:
                    raise ValueError(f"inference.classes=predicted needs an image classifier; method "
                                     f"'{self.method_name}' has none (use classes=label or all)")
                total = probs.float() if total is None else total + probs.float()
                count += 1
        return total / count

    def foreground_scores(self, raw: torch.Tensor, output: Optional[str] = None) -> torch.Tensor:
        """``B x C x H x W`` foreground scores, as the seed repos store them in their ``.npy`` dicts."""
        spec = self.output_spec(output)
        scores = spec.scores(raw)
        return scores[:, 1:] if spec.has_background else scores

    def finalize_scores(self, raw: torch.Tensor, output: Optional[str] = None) -> torch.Tensor:
        """``B x (1+C) x H x W`` scores, background first: the output's own, else the background rule's."""
        spec = self.output_spec(output)
        scores = spec.scores(raw)
        return scores if spec.has_background else self.background.add(scores)

    def scores(self, image: torch.Tensor) -> torch.Tensor:
        raw = self.raw_scores(image)
        raw = F.interpolate(raw, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return self.finalize_scores(raw)

    # ----- training -----------------------------------------------------------------------
    def training_losses(self, batch: dict) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.training_losses(batch)
        total = sum(losses.values())
        bs = batch["image"].shape[0]
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), batch_size=bs)
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=bs)
        return total

    # ----- validation ---------------------------------------------------------------------
    def multiscale_scores(self, image: torch.Tensor) -> torch.Tensor:
        """``scores`` through the shared multi-scale + flip inference with the method's ``inference`` scales.

        The batch is already normalised, so scales are made by bilinear resizing of the float tensor
        (``wsss.infer`` can resize the uint8 image the seed repos' way instead)."""
        size = image.shape[-2:]
        inputs = [image if s == 1.0 else F.interpolate(image, size=(round(size[0] * s), round(size[1] * s)),
                                                       mode="bilinear", align_corners=False)
                  for s in self.inference["scales"]]
        return self.finalize_scores(self.multiscale_raw_scores(inputs, size, bool(self.inference["flip"])))

    def predict_labels(self, batch: dict) -> torch.Tensor:
        scores = self.multiscale_scores(batch["image"]) if self.val_multiscale else self.scores(batch["image"])
        if self.eval_with_labels and "cls" in batch:
            scores = restrict_to_labels(scores, batch["cls"])
        return scores.argmax(dim=1)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        pred = self.predict_labels(batch)
        if dataloader_idx == 1:  # the training images of track_train_seeds
            self.train_seed_iou.update(pred, batch["mask"])
            return
        self.val_iou.update(pred, batch["mask"])
        if len(self._val_examples) < self.log_images and self.global_rank == 0:
            self._val_examples.append({"image": batch["image"][0].detach().cpu(), "gt": batch["mask"][0].cpu(),
                                       "pred": pred[0].cpu(), "name": batch["name"][0]})

    def on_validation_epoch_start(self) -> None:
        self._val_examples = []

    def on_validation_epoch_end(self) -> None:
        result = self.val_iou.compute()
        self.val_iou.reset()
        self.last_val_metrics = result
        self.last_val_step = self.global_step
        self.log("val/mIoU", result["mIoU"], prog_bar=True, sync_dist=False, rank_zero_only=False)
        self.log("val/mIoU_seam", result["mIoU_seam"], sync_dist=False)
        for name, iou in result["IoU"].items():
            if iou is not None:
                self.log(f"val/IoU/{name}", iou, sync_dist=False)
        if self.train_seed_iou is not None and int(self.train_seed_iou.confmat.sum()) > 0:
            seeds = self.train_seed_iou.compute()
            self.train_seed_iou.reset()
            self.last_train_seed_metrics = seeds
            self.log("train_seeds/mIoU", seeds["mIoU"], prog_bar=True, sync_dist=False, rank_zero_only=False)
            self.log("train_seeds/mIoU_seam", seeds["mIoU_seam"], sync_dist=False)

    # ----- optimisation -------------------------------------------------------------------
    def param_groups(self) -> List[dict]:
        """Optimiser groups from ``method.optim.paramwise`` (see :mod:`wsss.optim`)."""
        return param_groups(self, float(self.optim_cfg["lr"]), float(self.optim_cfg.get("weight_decay", 0.0)),
                            self.optim_cfg.get("paramwise"))

    def configure_optimizers(self):
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 1
        return optimizers_for(self, self.optim_cfg, self.sched_cfg, total)

    # ----- checkpoints --------------------------------------------------------------------
    def load_official(self, path: str) -> None:
        """Load the authors' released checkpoint with the method's importer (``release``)."""
        if self.release is not None:
            self.release.load(self, path)
            return
        raise ValueError(f"method '{self.method_name}' has no official-checkpoint importer; pass a wsss Lightning "
                         f"checkpoint (outputs/.../checkpoints/last.ckpt) as ckpt= instead of {path}")

    def use_tool(self, key: str, value) -> None:
        """Apply the extra tool ``key`` (one of ``tools``) with ``value``, e.g. SPML's retrieval memory file."""
        if key not in self.tools:
            raise ValueError(f"{key}= is a tool this method does not have: method '{self.method_name}' has "
                             f"{sorted(self.tools) or 'none'}")
        getattr(self, self.tools[key])(value)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        cls = type(self)
        checkpoint["wsss"] = {"method": self.method_name, "target": f"{cls.__module__}.{cls.__qualname__}"}


def metrics_to_json(metrics: Mapping) -> str:
    return json.dumps(metrics, indent=2, sort_keys=False)
