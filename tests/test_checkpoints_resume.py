"""checkpoints/last.ckpt is always the latest training state, and a run killed mid-epoch resumes from the last
epoch end at the next epoch (wsss.callbacks.ResumeCheckpoint is its only writer)."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from conftest import compose_train_cfg
from wsss.engine import build_datamodule, build_method, build_trainer

STEPS_PER_EPOCH = 6  # TINY_SET: 48 training images, batch 8, drop_last

QUICK = ["dataset.num_workers=0", "dataset.batch_size=8", "logger=none", "trainer.enable_progress_bar=false",
         "trainer.check_val_every_n_epoch=2", "+trainer.limit_val_batches=1"]


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _same_weights(ckpt_state, model):
    model_state = model.state_dict()
    assert ckpt_state.keys() == model_state.keys()
    return all(torch.equal(ckpt_state[k], model_state[k]) for k in model_state)


class _Epochs(pl.Callback):
    """Records the epoch of every training-epoch start and the first optimizer step of the run."""

    def __init__(self):
        self.started, self.first_step = [], None

    def on_train_epoch_start(self, trainer, *args):
        self.started.append(trainer.current_epoch)

    def on_train_batch_start(self, trainer, *args):
        if self.first_step is None:
            self.first_step = trainer.global_step


class _Killed(Exception):
    pass


class _KillAt(pl.Callback):
    """A job killed in the middle of epoch `epoch` (0-based), after `batch` of its batches."""

    def __init__(self, epoch, batch):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise _Killed


def test_last_ckpt_is_the_final_model(tmp_path, synthetic_root):
    """3 epochs, validation after epoch 2 only (the best file): last.ckpt is epoch 3's end, not the validated one."""
    cfg = compose_train_cfg(tmp_path, synthetic_root, QUICK + ["trainer.max_epochs=3"])
    trainer = build_trainer(cfg)
    model = build_method(cfg)
    trainer.fit(model, datamodule=build_datamodule(cfg))
    last = _load(tmp_path / "checkpoints" / "last.ckpt")
    assert trainer.global_step == 3 * STEPS_PER_EPOCH
    assert (last["global_step"], last["epoch"]) == (trainer.global_step, trainer.current_epoch)
    assert _same_weights(last["state_dict"], model)
    best = [p for p in (tmp_path / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    assert len(best) == 1 and _load(best[0])["global_step"] == 2 * STEPS_PER_EPOCH  # the validated epoch
    assert not list((tmp_path / "checkpoints").glob(".*partial"))


def test_last_ckpt_at_max_steps_mid_epoch(tmp_path, synthetic_root):
    """max_steps stops inside an epoch: the end of fit still writes the final state."""
    cfg = compose_train_cfg(tmp_path, synthetic_root, QUICK + ["trainer.max_epochs=-1", "trainer.max_steps=9"])
    trainer = build_trainer(cfg)
    model = build_method(cfg)
    trainer.fit(model, datamodule=build_datamodule(cfg))
    last = _load(tmp_path / "checkpoints" / "last.ckpt")
    assert last["global_step"] == trainer.global_step == 9
    assert _same_weights(last["state_dict"], model)


def test_killed_run_resumes_at_next_epoch(tmp_path, synthetic_root):
    """Killed in its 3rd of 4 epochs: last.ckpt is the end of epoch 2, and the resumed run trains epochs 3 and 4
    only, to the same step count as an uninterrupted run."""
    # no validation before the kill (it comes after epoch 3) and no step-triggered writes: only epoch ends write
    overrides = QUICK + ["trainer.max_epochs=4", "trainer.check_val_every_n_epoch=3",
                         "callbacks.resume_checkpoint.every_n_train_steps=0"]
    cfg = compose_train_cfg(tmp_path, synthetic_root, overrides)
    trainer = build_trainer(cfg)
    trainer.callbacks.append(_KillAt(epoch=2, batch=3))
    with pytest.raises(_Killed):
        trainer.fit(build_method(cfg), datamodule=build_datamodule(cfg))
    path = tmp_path / "checkpoints" / "last.ckpt"
    last = _load(path)
    assert (last["global_step"], last["epoch"]) == (2 * STEPS_PER_EPOCH, 1)

    trainer2 = build_trainer(compose_train_cfg(tmp_path, synthetic_root, overrides))
    seen = _Epochs()
    trainer2.callbacks.append(seen)
    model2 = build_method(cfg)
    trainer2.fit(model2, datamodule=build_datamodule(cfg), ckpt_path=str(path))
    assert seen.started == [2, 3] and seen.first_step == 2 * STEPS_PER_EPOCH
    assert trainer2.global_step == 4 * STEPS_PER_EPOCH
    final = _load(path)
    assert (final["global_step"], final["epoch"]) == (4 * STEPS_PER_EPOCH, trainer2.current_epoch)
    assert _same_weights(final["state_dict"], model2)
