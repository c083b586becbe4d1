"""SPML's random-walk pseudo labels (``pyscripts/inference/pseudo_softmaxrw_crf.py``, twke18/SPML@0800afd).

Stage 1's softmax probabilities are spread over its own embedding: pixel affinities ``exp(5 cos - 5)`` of the
unit embeddings at 1/8 of the image, averaged over the image and its mirror, raised to the 20th power and
column-normalised into a transition matrix that is squared 6 times (a 64-step walk); the class maps (each
divided by its maximum, classes outside the image's tags zeroed) are walked, resized back with cv2 bilinear,
and a dense CRF (``crf=spml``) on the image gives the label. Every value and its line: ``docs/spml.md``
"Stage 2". The tool around it is :mod:`wsss.random_walk_labelling`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from wsss.data.transforms import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class RandomWalkSettings:
    """``conf/refine/random_walk.yaml``; the defaults are the reference's values (docs/spml.md)."""

    feature_stride: int = 8        # F.interpolate(..., size=(image_h//8, image_w//8))  (pseudo_softmaxrw_crf.py:135,142)
    affinity_scale: float = 5.0    # aff = exp(5 * cos - 5)                               (:138)
    power: int = 20                # aff_mat = aff ** 20                                  (:162)
    squarings: int = 6             # WALK_STEPS=6 squarings of the transition matrix      (:29, :165-166)
    flip: bool = True              # create_image_pyramid(scales=[1], is_flip=True)       (:109-112)
    background: Optional[float] = None  # TH=None: class 0 keeps its normalised probability (:30, :156-157)

    @classmethod
    def from_config(cls, cfg: Optional[Mapping]) -> "RandomWalkSettings":
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known - {"name", "tags_dir"}
        if unknown:
            raise ValueError(f"refine: unknown keys {sorted(unknown)}; known: {sorted(known | {'name', 'tags_dir'})}")
        return cls(**{k: v for k, v in cfg.items() if k in known})


def _views(model, image: Tensor, settings: RandomWalkSettings) -> Tuple[Tensor, Tensor]:
    """Affinity matrix and class probabilities (``K x h x w``) at 1/stride, averaged over the mirrored and the
    plain image in the reference's order (flipped first). ``image``: ``3 x H x W`` normalised."""
    _, h, w = image.shape
    ch, cw = model.test_crop_size
    small = (h // settings.feature_stride, w // settings.feature_stride)
    affs, probs = [], []
    for flip in ((True, False) if settings.flip else (False,)):
        x = image.flip(-1) if flip else image
        x = F.pad(x[None], (0, max(w, cw) - w, 0, max(h, ch) - h))  # resize_with_pad: zeros bottom/right (:119-122)
        emb = model.embed(x, size=x.shape[-2:])                      # resize_as_input=True (:127)
        logits = model.logits(emb)                                  # classifier on the unit embedding (:128)
        emb, logits = emb[..., :h, :w].float(), logits[..., :h, :w].float()  # (:130-131)
        if flip:
            emb, logits = emb.flip(-1), logits.flip(-1)
        emb = F.interpolate(emb, size=small, mode="bilinear", align_corners=False)
        emb = emb / torch.norm(emb, dim=1)                           # (:136), no epsilon
        flat = emb.reshape(emb.shape[1], -1)
        affs.append((flat.t() @ flat).mul_(settings.affinity_scale).add_(-settings.affinity_scale).exp_())
        logits = F.interpolate(logits, size=small, mode="bilinear", align_corners=False)
        probs.append(F.softmax(logits, dim=1))
    return torch.stack(affs).mean(0), torch.cat(probs).mean(0)


def walk(aff: Tensor, cams: Tensor, power: int, squarings: int) -> Tensor:
    """``cams`` (``K x n``) times the column-normalised ``aff ** power`` raised to ``2 ** squarings``."""
    aff = aff ** power
    trans = aff / aff.sum(dim=0, keepdim=True)
    for _ in range(squarings):
        trans = trans @ trans
    return cams @ trans


@torch.no_grad()
def random_walk_scores(model, image: Tensor, tags: np.ndarray,
                       settings: RandomWalkSettings = RandomWalkSettings()) -> np.ndarray:
    """Walked class maps ``K x H x W`` (float32; background = class 0) of one normalised ``3 x H x W`` image.

    ``tags``: bool ``K`` (background included), the classes the label may use; the others are zeroed before the
    walk (``label_tags`` masking, :102-106, :154-155)."""
    _, h, w = image.shape
    if h < settings.feature_stride or w < settings.feature_stride:
        raise ValueError(f"image {h}x{w} is smaller than the random walk's feature stride {settings.feature_stride}")
    aff, probs = _views(model, image, settings)
    k = probs.shape[0]
    cams = probs / probs.reshape(k, -1).max(dim=1).values.view(k, 1, 1)   # normalize cam (:150-151)
    keep = torch.as_tensor(np.asarray(tags, bool), device=cams.device)
    if keep.shape != (k,):
        raise ValueError(f"tags must be {k} booleans (background first), got shape {tuple(keep.shape)}")
    cams = cams.masked_fill(~keep.view(-1, 1, 1), 0)
    if settings.background is not None:
        cams[0] = float(settings.background)
    small = cams.shape[-2:]
    walked = walk(aff, cams.reshape(k, -1), settings.power, settings.squarings).reshape(k, *small)
    import cv2

    arr = np.ascontiguousarray(walked.cpu().numpy().transpose(1, 2, 0))
    full = cv2.resize(arr, dsize=(w, h), interpolation=cv2.INTER_LINEAR)          # (:173-175)
    full = full.reshape(h, w, k)  # cv2 drops a channel axis of size 1
    return np.ascontiguousarray(full.transpose(2, 0, 1)).astype(np.float32, copy=False)


def crf_image(image: Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """The uint8 image the reference gives its CRF: the normalised float32 image times std plus mean, times 255,
    truncated (``astype(np.uint8)``, :179-184) - a pixel can come back one below its file value."""
    arr = image.detach().cpu().numpy().astype(np.float32).transpose(1, 2, 0).copy()
    arr *= np.reshape(list(std), (1, 1, 3))
    arr += np.reshape(list(mean), (1, 1, 3))
    arr = arr * 255
    return arr.astype(np.uint8)
