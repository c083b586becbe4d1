"""Dense CRF refinement of class score maps, with one preset per seed method.

Why presets: every seed repo feeds ``pydensecrf`` differently: unary from the scores
(``unary_from_softmax``) or from their argmax (``unary_from_labels``), 21 labels or only
the image's classes, its own background rule, kernel widths and iteration count. A
published pseudo-label number is only reproducible with that exact recipe, so each one
is a YAML file in ``conf/crf/`` (sources cited there) read into a :class:`CRFPreset`.

Two levels:
* :func:`dense_crf` ``(image, probs, preset) -> probs``: the pydensecrf calls only;
* :func:`refine` ``(image, fg_scores, fg_ids, preset, bg) -> label map``: background,
  label space, CRF and argmax, i.e. what a pseudo-label pipeline needs per image.
:func:`refine_many` runs :func:`refine` over many images in a process pool.

Background: the pipeline's rule (``bg`` argument, a :class:`wsss.postprocess.background.Background`)
is used unless the preset names its
own ``background``; then the preset wins, because that rule is part of its recipe (e.g.
SEAM's ``(1 - max fg)^4``). Set ``crf.background=null`` to use the pipeline rule instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from multiprocessing import get_context
from typing import Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np

from .background import Background, plain_config

UNARIES = ("softmax", "labels")
LABEL_SPACES = ("present", "all")
#: the RGB image the bilateral kernel sees: the file's pixels, or the reference's round trip through its
#: normalisation (float32 ``(x/255 - mean)/std`` then ``((x*std + mean)*255).astype(uint8)``, which truncates)
CRF_IMAGES = ("original", "renormalized")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Gaussian:
    sxy: float = 3.0
    compat: float = 3.0


@dataclass(frozen=True)
class Bilateral:
    sxy: float = 80.0
    srgb: float = 13.0
    compat: float = 10.0


@dataclass(frozen=True)
class CRFPreset:
    """One dense-CRF recipe. ``enabled=False`` (preset ``none``) means: argmax only.

    * ``unary``: ``softmax`` = ``unary_from_softmax(scores, clip=clip)`` (scores used as
      they are, not renormalised, like every seed repo); ``labels`` =
      ``unary_from_labels(argmax(scores), n, gt_prob, zero_unsure=False)`` (RTC).
    * ``label_space``: ``present`` = background + the image's classes (K+1 labels);
      ``all`` = all ``num_classes`` labels, absent classes scored 0 (RTC, WS-FCN, SPML).
    * ``background``: the preset's own background rule, or None for the pipeline's.
    * ``scale_factor`` divides both kernels' ``sxy`` (SEAM's ``crf_inference`` argument).
    * ``image``: ``original`` pixels, or ``renormalized`` (:func:`crf_image`; RecurSeed's CRF).
    """

    name: str = "none"
    enabled: bool = False
    unary: str = "softmax"
    gt_prob: float = 0.7
    clip: float = 1e-5
    label_space: str = "present"
    background: Optional[Background] = None
    iterations: int = 10
    scale_factor: float = 1.0
    gaussian: Gaussian = field(default_factory=Gaussian)
    bilateral: Bilateral = field(default_factory=Bilateral)
    image: str = "original"
    source: str = ""

    def __post_init__(self):
        if self.unary not in UNARIES:
            raise ValueError(f"crf preset '{self.name}': unary '{self.unary}' unknown; use one of {UNARIES}")
        if self.label_space not in LABEL_SPACES:
            raise ValueError(f"crf preset '{self.name}': label_space '{self.label_space}' unknown; "
                             f"use one of {LABEL_SPACES}")
        if not 0 < self.gt_prob < 1:
            raise ValueError(f"crf preset '{self.name}': gt_prob must lie in (0, 1), got {self.gt_prob}")
        if self.enabled and int(self.iterations) < 1:
            raise ValueError(f"crf preset '{self.name}': iterations must be >= 1")
        if self.scale_factor <= 0:
            raise ValueError(f"crf preset '{self.name}': scale_factor must be > 0")
        if self.image not in CRF_IMAGES:
            raise ValueError(f"crf preset '{self.name}': image '{self.image}' unknown; use one of {CRF_IMAGES}")

    @classmethod
    def from_config(cls, cfg) -> "CRFPreset":
        """Build from a ``conf/crf/*.yaml`` node (DictConfig or dict), a name, or a preset."""
        if isinstance(cfg, CRFPreset):
            return cfg
        if cfg is None or cfg == "none":
            return cls()
        if isinstance(cfg, str):
            return load_preset(cfg)
        cfg = plain_config(cfg)
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"crf preset '{cfg.get('name', '?')}': unknown keys {sorted(unknown)}; "
                             f"known: {sorted(known)}")
        cfg = dict(cfg)
        if "gaussian" in cfg:
            cfg["gaussian"] = Gaussian(**(cfg["gaussian"] or {}))
        if "bilateral" in cfg:
            cfg["bilateral"] = Bilateral(**(cfg["bilateral"] or {}))
        cfg["background"] = Background.from_config(cfg.get("background"))
        return cls(**cfg)


def load_preset(name: str) -> CRFPreset:
    """Read ``conf/crf/NAME.yaml`` (:func:`wsss.paths.config_dir`; for scripts and tests without Hydra)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from wsss.paths import config_dir

    path = Path(config_dir()) / "crf" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"crf preset '{name}' not found at {path}; known presets: {known}")
    return CRFPreset.from_config(OmegaConf.load(path))


def crf_image(image: np.ndarray, preset: CRFPreset) -> np.ndarray:
    """The image the bilateral kernel sees. ``renormalized``: RecurSeed's ``augment_utils.Normalize`` (float32,
    channel by channel) followed by ``Denormalize`` (float64 ``x*std + mean``, ``*255``, ``astype(uint8)``,
    i.e. truncation: some pixels come back one lower), OFRIN/RecurSeed_and_EdgePredictMix@df538e2
    ``tools/ai/augment_utils.py:340-385``, ``convert_seed_to_pseudo_masks.py:107``."""
    if preset.image == "original":
        return image
    x = np.asarray(image, dtype=np.float32)
    norm = np.empty_like(x)
    for c in range(3):
        norm[..., c] = (x[..., c] / 255. - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
    return ((norm * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)) * 255).astype(np.uint8)


def dense_crf(image: np.ndarray, probs: np.ndarray, preset: CRFPreset) -> np.ndarray:
    """Run the preset's dense CRF on ``probs`` (n x H x W); returns the n x H x W marginals.

    ``image`` is the uint8 H x W x 3 RGB image the scores belong to.
    """
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels, unary_from_softmax

    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"probs must be n x H x W, got shape {probs.shape}")
    n, h, w = probs.shape
    _check_image(image, (h, w))
    image = crf_image(image, preset)
    if not np.isfinite(probs).all():
        raise ValueError("scores contain NaN or inf; the CRF unary would be undefined")
    if preset.unary == "softmax":
        unary = unary_from_softmax(probs, clip=preset.clip)
    else:
        labels = np.argmax(probs, axis=0).astype(np.uint8 if n <= 256 else np.int64)
        unary = unary_from_labels(labels, n, gt_prob=preset.gt_prob, zero_unsure=False)
    crf = dcrf.DenseCRF2D(w, h, n)
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    crf.addPairwiseGaussian(sxy=preset.gaussian.sxy / preset.scale_factor, compat=preset.gaussian.compat)
    crf.addPairwiseBilateral(sxy=preset.bilateral.sxy / preset.scale_factor, srgb=preset.bilateral.srgb,
                             rgbim=np.array(image, order="C"),  # a writable copy: pydensecrf refuses
                             compat=preset.bilateral.compat)    # read-only buffers (e.g. from PIL)
    q = crf.inference(int(preset.iterations))
    return np.asarray(q, dtype=np.float32).reshape(n, h, w)


def _check_image(image: np.ndarray, shape: Tuple[int, int]) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be a uint8 H x W x 3 RGB array, got "
                         f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")
    if image.shape[:2] != tuple(shape):
        raise ValueError(f"image is {image.shape[0]}x{image.shape[1]} but the scores are {shape[0]}x{shape[1]}")


def effective_background(preset: CRFPreset, bg: Optional[Background]) -> Background:
    """The preset's background rule if it has one, else the pipeline's ``bg``."""
    if preset.enabled and preset.background is not None:
        return preset.background
    if bg is None:
        raise ValueError(f"crf preset '{preset.name}' defines no background rule; pass bg (rule/threshold/alpha)")
    return bg


def stack_scores(fg_scores: np.ndarray, fg_ids: Sequence[int], preset: CRFPreset,
                 bg: Optional[Background] = None, num_classes: Optional[int] = None
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Background + foreground scores in the preset's label space, and each row's class id.

    ``fg_ids`` are 0-based foreground indices (the score dicts' keys; class id = index + 1).
    """
    fg = np.asarray(fg_scores, dtype=np.float32)
    ids = [int(i) for i in fg_ids]
    if fg.ndim != 3 or fg.shape[0] != len(ids):
        raise ValueError(f"fg_scores must be K x H x W with K = len(fg_ids) = {len(ids)}, got {fg.shape}")
    if len(set(ids)) != len(ids) or any(i < 0 for i in ids):
        raise ValueError(f"fg_ids must be distinct non-negative foreground indices, got {ids}")
    if preset.enabled and preset.label_space == "all":
        if num_classes is None:
            raise ValueError(f"crf preset '{preset.name}' uses all classes: pass num_classes (with background)")
        if ids and max(ids) >= num_classes - 1:
            raise ValueError(f"foreground index {max(ids)} outside 0..{num_classes - 2}")
        full = np.zeros((num_classes - 1,) + fg.shape[1:], dtype=np.float32)
        full[ids] = fg
        fg, class_ids = full, np.arange(num_classes)
    else:
        class_ids = np.array([0] + [i + 1 for i in ids])
    rule = effective_background(preset, bg)
    if preset.enabled and preset.background is not None:
        background = _reference_background(fg, rule)
    else:
        background = _pipeline_background(fg, rule)
    return np.concatenate([background, fg], axis=0), class_ids


def _reference_background(fg: np.ndarray, rule: Background) -> np.ndarray:
    """The seed repos' own numpy formula (float32, no clamping), so presets reproduce them bit for bit."""
    if rule.rule == "threshold":
        return np.full((1,) + fg.shape[1:], rule.threshold, dtype=np.float32)
    top = np.max(fg, axis=0, keepdims=True) if fg.shape[0] else np.zeros((1,) + fg.shape[1:], np.float32)
    base = 1 - top
    if not float(rule.alpha).is_integer():
        base = np.maximum(base, 0)  # a fractional power of a negative number is NaN
    return np.power(base, rule.alpha).astype(np.float32)


def _pipeline_background(fg: np.ndarray, rule: Background) -> np.ndarray:
    import torch

    return rule.add(torch.from_numpy(fg))[:1].numpy().astype(np.float32)


def refine(image: np.ndarray, fg_scores: np.ndarray, fg_ids: Sequence[int], preset: CRFPreset,
           bg: Optional[Background] = None, num_classes: Optional[int] = None) -> np.ndarray:
    """Label map (uint8 class ids, 0 = background) of one image: background rule, CRF, argmax.

    With preset ``none`` this is the plain argmax over [background, fg classes]; ties go
    to the lower row (background first), as in SEAM's evaluation.
    """
    scores, class_ids = stack_scores(fg_scores, fg_ids, preset, bg, num_classes)
    if preset.enabled:
        _check_image(image, scores.shape[1:])
        if scores.shape[0] > 1:  # one label only: nothing to decide (RecurSeed writes zeros too)
            scores = dense_crf(image, scores, preset)
    return class_ids[np.argmax(scores, axis=0)].astype(np.uint8)


def _limit_threads() -> None:
    """One CRF per process: keep torch/BLAS from oversubscribing the cores."""
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def worker_pool(workers: int):
    """A process pool of ``workers`` processes, or None for 0/1 (run in this process).

    ``fork`` where the platform has it: a spawned worker re-imports torch (seconds each on a
    small machine); torch re-initialises its thread pools after fork, as its DataLoader relies on.
    """
    if int(workers) <= 1:
        return None
    import multiprocessing

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return get_context(method).Pool(int(workers), initializer=_limit_threads)


def _refine_job(args):
    image, fg_scores, fg_ids, preset, bg, num_classes = args
    return refine(image, fg_scores, fg_ids, preset, bg, num_classes)


def refine_many(jobs: Iterable[Tuple[np.ndarray, np.ndarray, Sequence[int]]], preset: CRFPreset,
                bg: Optional[Background] = None, num_classes: Optional[int] = None,
                workers: int = 0) -> Iterator[np.ndarray]:
    """:func:`refine` over ``(image, fg_scores, fg_ids)`` jobs, in order, on ``workers`` processes."""
    tasks = ((image, scores, ids, preset, bg, num_classes) for image, scores, ids in jobs)
    pool = worker_pool(workers)
    if pool is None:
        yield from map(_refine_job, tasks)
        return
    with pool:
        yield from pool.imap(_refine_job, tasks)
