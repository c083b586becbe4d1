"""The background-threshold curve in one pass over the data.

SEAM-style score dicts are scored against a constant background plane at ``t``.
The prediction at any ``t`` depends on each pixel only through its GT, its best
foreground class and that class's score, and the foreground wins exactly when
``score > t`` (SEAM's ``np.argmax`` puts background first, so a tie goes to the
background). So one pass keeps a histogram over (GT, best fg class, score bin),
where the bin of a score is the number of thresholds strictly below it; the
confusion matrix of every threshold then follows from cumulative sums over the
bins, without re-reading any file.

Comparisons are made in float32 because SEAM writes ``t`` into a float32 tensor.
"""
from __future__ import annotations

from typing import Mapping, Sequence, Tuple

import numpy as np

IGNORE_INDEX = 255


def default_thresholds() -> list[float]:
    """SEAM's ``--curve`` range: 0.00, 0.01, ..., 0.59."""
    return [i / 100.0 for i in range(60)]


def best_foreground(scores: Mapping[int, np.ndarray], num_classes: int,
                    shape: Tuple[int, int] | None = None) -> Tuple[np.ndarray, np.ndarray]:
    """Best foreground class (1-based label id) and its float32 score per pixel.

    Follows SEAM's dense tensor exactly: fg index ``k`` sits at channel ``k+1``,
    absent keys are all-zero planes, and ``argmax`` resolves ties to the lower
    class. ``shape`` is only needed when ``scores`` is empty.
    """
    num_fg = num_classes - 1
    keys = sorted(int(k) for k in scores)
    if not keys:
        if shape is None:
            raise ValueError("an empty score dict needs the map shape")
        # every class is an absent zero plane: class 1 wins all fg ties
        return np.ones(shape, np.int64), np.zeros(shape, np.float32)
    if len(keys) == 1:
        best_score = np.asarray(scores[keys[0]], dtype=np.float32)
        best_idx = np.full(best_score.shape, keys[0], np.int64)
    else:
        stack = np.stack([np.asarray(scores[k], dtype=np.float32) for k in keys])
        pos = stack.argmax(axis=0)  # ties -> lower key, because keys are sorted
        best_score = np.take_along_axis(stack, pos[None], axis=0)[0]
        best_idx = np.asarray(keys, np.int64)[pos]
    if len(keys) < num_fg:
        present = set(keys)
        absent = next(k for k in range(num_fg) if k not in present)
        # an absent zero plane beats negative scores and wins ties at 0 when its index is lower
        zero_wins = (best_score < 0) | ((best_score == 0) & (best_idx > absent))
        if zero_wins.any():
            best_idx = np.where(zero_wins, absent, best_idx)
            best_score = np.where(zero_wins, np.float32(0), best_score)
    return best_idx + 1, best_score


class ThresholdCurve:
    """Histogram of (GT, best fg class, score bin) from which every threshold's confusion follows.

    ``thresholds`` may be in any order and contain duplicates; results come back
    in the given order.
    """

    def __init__(self, thresholds: Sequence[float], num_classes: int):
        if num_classes < 2:
            raise ValueError("num_classes must count the background and at least one class")
        thr = np.asarray(list(thresholds), dtype=np.float64).reshape(-1)
        if thr.size == 0:
            raise ValueError("the threshold list is empty")
        if not np.isfinite(thr).all():
            raise ValueError(f"thresholds must be finite numbers, got {thr.tolist()}")
        self.thresholds = thr
        self.num_classes = num_classes
        self._order = np.argsort(thr.astype(np.float32), kind="stable")
        self._sorted32 = thr.astype(np.float32)[self._order]
        k = thr.size
        self.counts = np.zeros((num_classes, num_classes - 1, k + 1), np.int64)

    @property
    def num_bins(self) -> int:
        return self._sorted32.size + 1

    def bins(self, score: np.ndarray) -> np.ndarray:
        """Number of thresholds strictly below each score (fg wins for exactly those)."""
        return np.searchsorted(self._sorted32, np.asarray(score, np.float32), side="left")

    def update(self, gt: np.ndarray, fg_class: np.ndarray, fg_score: np.ndarray) -> None:
        """Add one image: GT ids (255 ignored), 1-based best fg class, its score."""
        gt = np.asarray(gt)
        if gt.shape != np.shape(fg_class) or gt.shape != np.shape(fg_score):
            raise ValueError(f"GT {gt.shape} and scores {np.shape(fg_score)} differ in size")
        keep = gt != IGNORE_INDEX
        g = gt[keep].astype(np.int64)
        if g.size and g.max() >= self.num_classes:
            raise ValueError(f"GT class id {int(g.max())} outside 0..{self.num_classes - 1} (255 = ignore)")
        c = np.asarray(fg_class)[keep].astype(np.int64) - 1
        b = self.bins(np.asarray(fg_score)[keep])
        nb = self.num_bins
        flat = (g * (self.num_classes - 1) + c) * nb + b
        self.counts += np.bincount(flat, minlength=self.counts.size).reshape(self.counts.shape)

    def merge(self, other: "ThresholdCurve | np.ndarray") -> None:
        counts = other.counts if isinstance(other, ThresholdCurve) else np.asarray(other)
        if counts.shape != self.counts.shape:
            raise ValueError(f"cannot merge curve counts of shape {counts.shape} into {self.counts.shape}")
        self.counts += counts

    def confusions(self) -> np.ndarray:
        """(K x n x n) int64 confusion matrices (rows GT, cols prediction), in threshold order."""
        n, k = self.num_classes, self._sorted32.size
        # at_or_above[..., j] = pixels whose bin >= j
        at_or_above = np.cumsum(self.counts[..., ::-1], axis=-1)[..., ::-1]
        fg = np.moveaxis(at_or_above[..., 1:], -1, 0)  # sorted threshold j: bin > j -> fg wins
        total = at_or_above[..., 0]
        conf_sorted = np.zeros((k, n, n), np.int64)
        conf_sorted[:, :, 1:] = fg
        conf_sorted[:, :, 0] = (total[None] - fg).sum(axis=-1)
        conf = np.empty_like(conf_sorted)
        conf[self._order] = conf_sorted
        return conf


def curve_scores(confusions: np.ndarray, class_names: Sequence[str] | None = None) -> list[dict]:
    """``scores_from_confusion`` for each threshold's confusion matrix."""
    from .confusion import scores_from_confusion

    return [scores_from_confusion(conf, class_names) for conf in confusions]


def best_threshold_index(values: Sequence[float]) -> int:
    """Index of the highest value; the lowest threshold wins a tie (first in list order)."""
    return int(np.argmax(np.asarray(values, dtype=np.float64)))
