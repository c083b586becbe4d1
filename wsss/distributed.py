"""Post-training tools under ``torchrun`` (or SLURM's ``srun``): one process per rank, images sharded.

Why: inference and CRF over COCO-sized splits outgrow one process; launched the standard way, every rank takes
every ``world``-th image, writes its own files atomically (so a killed rank resumes per image like a single
run), and rank 0 alone writes the records and scores the whole folder from disk, so the metrics are exact
(confusion matrices over every file, not means of means). Without a launcher it is one process, as before.
"""
from __future__ import annotations

import os
from typing import List, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def world() -> tuple:
    """``(rank, world_size)`` from the launcher's environment (``(0, 1)`` without one); joins the process group
    (gloo on CPU, NCCL with CUDA) the first time."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def local_device(name: str) -> str:
    """``device=cuda`` (or ``auto`` with CUDA) under a launcher: this rank's own GPU (``LOCAL_RANK``)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and torch.cuda.is_available() and name in ("cuda", "auto"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return name


def shard(items: Sequence[T]) -> List[T]:
    """This rank's share: every ``world``-th item from its rank (the same split on every rank)."""
    rank, size = world()
    return list(items)[rank::size]


def is_main() -> bool:
    return world()[0] == 0


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def finish() -> None:
    """Leave the process group (so the launcher sees every rank end cleanly)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def sum_over_ranks(matrix, counts: Sequence[int]) -> tuple:
    """A confusion matrix and counts summed over every rank (exact integers; unchanged in one process)."""
    import numpy as np

    if world()[1] == 1:
        return matrix, list(counts)
    packed = torch.from_numpy(np.concatenate([np.asarray(matrix, np.int64).ravel(), np.asarray(counts, np.int64)]))
    dist.all_reduce(packed)
    flat = packed.numpy()
    n = int(np.asarray(matrix).size)
    return flat[:n].reshape(np.asarray(matrix).shape), [int(v) for v in flat[n:]]


def merge_dicts(part: dict) -> dict:
    """Every rank's ``part`` merged, on every rank (a small dict: e.g. the files a rank could not read)."""
    if world()[1] == 1:
        return dict(part)
    parts = [None] * world()[1]
    dist.all_gather_object(parts, dict(part))
    return {k: v for p in parts for k, v in p.items()}
