"""Process pools of the post-training tools, in one place.

Why: evaluate, pseudo_label and infer each ran their own pool. All use :func:`wsss.postprocess.crf.worker_pool`
(``fork`` where available, one torch thread per worker); ``workers`` 0 or 1 runs in this process.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Iterator, Optional, Sequence


def map_tasks(fn: Callable, tasks: Sequence, workers: int, progress: bool = False, desc: str = "",
              sizes: Optional[Sequence[int]] = None, ordered: bool = True) -> Iterator:
    """``fn(task)`` for every task, yielded in task order (``ordered``) or as they finish.

    ``sizes``: how much each task counts on the progress bar (e.g. images per chunk; default 1).
    """
    from wsss.postprocess.crf import worker_pool

    sizes = list(sizes) if sizes is not None else [1] * len(tasks)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(sizes), desc=desc, unit="img", dynamic_ncols=True)
    pool = worker_pool(workers) if len(tasks) > 1 else None
    try:
        if pool is None:
            results = map(fn, tasks)
        elif ordered:
            results = pool.imap(fn, tasks)
        else:
            results = pool.imap_unordered(fn, tasks, chunksize=max(1, min(16, len(tasks) // (8 * int(workers)))))
        for i, res in enumerate(results):
            if bar is not None:
                bar.update(sizes[i] if ordered else 1)
            yield res
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if bar is not None:
            bar.close()


class BackgroundJobs:
    """``fn(task)`` jobs on ``workers`` processes while the caller goes on (infer's CRF during inference);
    at most ``2 x workers`` pending, so results never pile up in memory."""

    def __init__(self, fn: Callable, workers: int):
        from wsss.postprocess.crf import worker_pool

        self.fn = fn
        self.pool = worker_pool(workers)
        self.pending: deque = deque()
        self.limit = max(2, 2 * int(workers))
        self.results: list = []  # what the finished jobs returned, in submission order

    def submit(self, task) -> None:
        if self.pool is None:
            self.results.append(self.fn(task))
            return
        self.pending.append(self.pool.apply_async(self.fn, (task,)))
        while len(self.pending) > self.limit:
            self.results.append(self.pending.popleft().get())

    def close(self) -> None:
        """Wait for every job (re-raising the first error), then end the pool."""
        try:
            while self.pending:
                self.results.append(self.pending.popleft().get())
        finally:
            if self.pool is not None:
                self.pool.terminate() if self.pending else self.pool.close()
                self.pool.join()
