"""Training callbacks wsss adds to Lightning's."""
from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl


class ResumeCheckpoint(pl.Callback):
    """The one writer of ``dirpath/last.ckpt``: always the latest training state, written atomically.

    It is rewritten at the end of every training epoch (after that epoch's validation, if any), every
    ``every_n_train_steps`` optimizer steps, and when ``fit`` ends (so it holds the final model even when
    ``max_steps`` stops training mid-epoch). Lightning's ``ModelCheckpoint`` keeps only the best file by
    ``val/mIoU`` (``conf/callbacks/default.yaml`` sets ``save_last: false``): sharing ``last.ckpt`` with it
    left an old epoch there. Each write goes to a temporary file that rank 0 renames into place, so a kill
    during the write leaves the previous ``last.ckpt`` intact; every rank then waits at a barrier. A kill
    does not write (Lightning calls ``on_exception``, not ``on_train_end``), so ``last.ckpt`` is then the
    last epoch end or step multiple, and ``ckpt_path=.../last.ckpt`` resumes there: from an epoch-end file,
    at the next epoch.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 500, filename: str = "last.ckpt"):
        self.dirpath, self.every, self.filename = Path(dirpath), int(every_n_train_steps), filename

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        step = trainer.global_step
        if self.every > 0 and step > 0 and step % self.every == 0:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    def save(self, trainer: pl.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        tmp = self.dirpath / f".{self.filename}.partial"
        trainer.save_checkpoint(tmp, weights_only=False)  # every rank takes part; rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        trainer.strategy.barrier("resume_checkpoint")
