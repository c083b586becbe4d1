"""mIoU as a torchmetrics Metric: one (1+C)x(1+C) confusion matrix, summed across DDP ranks."""
from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics import Metric

from .confusion import IGNORE_INDEX, confusion_matrix, scores_from_confusion


class SegmentationIoU(Metric):
    """Accumulates a confusion matrix; ``compute`` returns both mIoU conventions.

    Exactness under DDP relies on the evaluation sampler not padding duplicates
    (see :class:`wsss.data.samplers.UnpaddedDistributedSampler`): the sum of the
    ranks' matrices then equals the single-process matrix bit for bit.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None,
                 ignore_index: int = IGNORE_INDEX, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.ignore_index = ignore_index
        self.add_state("confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.long),
                       dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        # out of place: under ddp_spawn on CPU the initial state tensor lives in memory shared by every
        # rank, so `+=` would add all ranks' counts into one tensor (and the sum would count them twice)
        self.confmat = self.confmat + confusion_matrix(pred.detach(), target.detach(), self.num_classes,
                                                       self.ignore_index).to(self.confmat.device)

    def compute(self) -> dict:
        result = scores_from_confusion(self.confmat.cpu().numpy(), self.class_names)
        result["confmat"] = self.confmat.cpu().tolist()
        return result
