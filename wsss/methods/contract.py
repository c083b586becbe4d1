"""What a method declares about its dense outputs, so callers never guess a channel layout.

A method lists its outputs (:class:`OutputSpec`, e.g. ``cam`` and ``seg``) and names the one its seeds come from
(``seed_output``). Each output says whether channel 0 is background and how summed multi-scale raw scores become
scores; the base class turns that into ``foreground_scores`` (C maps, what ``scores/ID.npy`` stores) and
``finalize_scores`` (background first, the method's background rule added where the output has no background).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .cam_ops import max_normalize, probability_normalize

NORMALIZATIONS = ("max", "none", "probability")


@dataclass(frozen=True)
class OutputSpec:
    """One dense output of a method.

    * ``has_background``: raw scores are ``1+C`` channels with background first (a learned background, e.g. a
      segmentation softmax); otherwise ``C`` foreground channels that get the method's background rule.
    * ``normalize``: ``max`` (ReLU, division by the spatial maximum: CAMs), ``none`` (already comparable scores)
      or ``probability`` (division by the class sum: summed probabilities).
    """

    name: str
    has_background: bool
    normalize: str = "max"

    def __post_init__(self):
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"output '{self.name}': normalize must be one of {NORMALIZATIONS}, not {self.normalize!r}")

    def scores(self, raw: torch.Tensor) -> torch.Tensor:
        """Aggregated raw scores as comparable scores, channel layout unchanged."""
        if self.normalize == "max":
            return max_normalize(raw)
        if self.normalize == "probability":
            return probability_normalize(raw)
        return raw


#: a segmentation network's softmax, background first (DeepLab, SPML): summed over scales, renormalised
SOFTMAX_SEG = OutputSpec("seg", has_background=True, normalize="probability")
