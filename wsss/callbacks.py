"""Training callbacks wsss adds to Lightning's."""
from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl


class ResumeCheckpoint(pl.Callback):
    """Rewrites ``dirpath/last.ckpt`` every ``every_n_train_steps`` optimizer steps, atomically.

    Lightning's ``ModelCheckpoint`` monitoring ``val/mIoU`` defers saving until a validation has run, so a
    run killed mid-epoch would lose the epoch. This writes a temporary file and renames it into place, so
    a kill during the write leaves the previous ``last.ckpt`` intact; ``ckpt_path=.../last.ckpt`` resumes.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 500, filename: str = "last.ckpt"):
        self.dirpath, self.every, self.filename = Path(dirpath), int(every_n_train_steps), filename
        self._saved_step = -1

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        step = trainer.global_step
        if self.every <= 0 or step == 0 or step % self.every or step == self._saved_step:
            return
        self._saved_step = step
        target = self.dirpath / self.filename
        tmp = self.dirpath / f".{self.filename}.partial"
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, target)
        trainer.strategy.barrier("resume_checkpoint")
