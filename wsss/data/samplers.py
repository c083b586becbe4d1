"""Evaluation sampler for DDP that never duplicates samples.

``DistributedSampler`` pads every rank to the same length by repeating images, which
counts those images twice in a summed confusion matrix. This sampler gives rank r the
indices r, r+W, r+2W, ... and nothing more, so the ranks' matrices sum to exactly the
single-process one. It subclasses ``DistributedSampler`` so Lightning leaves it alone.
"""
from __future__ import annotations

from torch.utils.data import Dataset, DistributedSampler


class UnpaddedDistributedSampler(DistributedSampler):
    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(self.rank, len(self.dataset), self.num_replicas))
        self.total_size = len(self.dataset)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples
