"""Training end to end: the bare CLI, learning, bf16, resume after an interruption, DDP metric parity."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from conftest import REPO, TINY_SET, compose_train_cfg, constant_background_miou
from wsss.engine import build_datamodule, build_method, fit, load_method_checkpoint


def test_bare_cli_writes_metrics_and_checkpoint(tmp_path):
    """`python -m wsss.train` as users run it, shortened with debug=fast and a smaller data set."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "wsss.train", "debug=fast", f"hydra.run.dir={out}",
           f"paths.data_dir={tmp_path / 'data'}", "dataset.synthetic.num_train=32",
           "dataset.synthetic.num_val=9", "dataset.synthetic.image_size=[64,64]"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"val/mIoU=\d\.\d{4}", last), last
    metrics = json.loads((out / "metrics.json").read_text())
    assert isinstance(metrics["val/mIoU"], float) and isinstance(metrics["val/mIoU_seam"], float)
    assert set(metrics["val/IoU"]) == {"background", "aeroplane", "bicycle", "bird", "boat", "bottle"}
    assert float(last.split("=")[1]) == pytest.approx(metrics["val/mIoU"], abs=5e-5)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / ".hydra" / "config.yaml").is_file()
    assert (tmp_path / "data" / "synthetic" / "synthetic.json").is_file()
    # the summary is also in the run's log file, with time and level (Hydra's file handler)
    log = (out / "train.log").read_text().splitlines()
    assert re.fullmatch(r"\[[\d\- :,]+\]\[wsss\.train\]\[INFO\] - " + re.escape(last), log[-1]), log[-3:]
    assert any(line.endswith("per-class IoU:") for line in log)
    # the recipe it ran
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 0 and run["wsss_version"]
    assert {k: run["choices"][k] for k in ("method", "dataset", "backbone", "supervision", "experiment")} == {
        "method": "cam", "dataset": "synthetic", "backbone": "tiny", "supervision": "tag", "experiment": None}
    assert "preset" in run["choices"] and "debug=fast" in run["overrides"]
    # what it measured with: code, libraries, device, the final step (wsss.provenance)
    assert run["status"] == "done" and run["wall_s"] > 0 and run["libraries"]["torch"] == torch.__version__
    assert run["device"]["cuda"] == torch.cuda.is_available() and run["wsss"]["version"] == run["wsss_version"]
    assert run["details"]["global_step"] > 0 and run["details"]["labels_restrict_validation"] is True
    assert run["details"]["last_checkpoint"] == str(out / "checkpoints" / "last.ckpt")


def test_missing_resume_checkpoint_fails_first(tmp_path, synthetic_root, monkeypatch):
    """ckpt_path= naming no file fails at once, naming the file, before data or model are built."""
    import wsss.engine as engine

    def built(*args, **kwargs):
        raise AssertionError("built data / model before checking ckpt_path")

    monkeypatch.setattr(engine, "build_datamodule", built)
    monkeypatch.setattr(engine, "build_method", built)
    missing = tmp_path / "old_run" / "checkpoints" / "last.ckpt"
    cfg = compose_train_cfg(tmp_path / "run", synthetic_root, ["debug=fast", "logger=none", f"ckpt_path={missing}"])
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        fit(cfg)


def test_cli_error_goes_to_log_file(tmp_path):
    """A failing run's traceback is in its train.log (Hydra itself prints it to stderr only)."""
    out = tmp_path / "run"
    missing = tmp_path / "nowhere.ckpt"
    proc = subprocess.run([sys.executable, "-m", "wsss.train", "debug=fast", f"hydra.run.dir={out}",
                           f"paths.data_dir={tmp_path / 'data'}", f"ckpt_path={missing}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    log = (out / "train.log").read_text()
    assert "[ERROR]" in log and "Traceback" in log and f"FileNotFoundError: ckpt_path={missing}" in log, log
    assert not (tmp_path / "data").exists()  # failed before the data set was made


def test_cam_baseline_learns(tmp_path, synthetic_root):
    cfg = compose_train_cfg(tmp_path, synthetic_root, [
        "trainer.max_epochs=25", "trainer.check_val_every_n_epoch=25", "trainer.enable_progress_bar=false",
        "dataset.num_workers=0", "dataset.batch_size=8", "logger=none"])
    floor = constant_background_miou(cfg)
    metrics = fit(cfg)
    # measured: constant background ~0.13 on this set; the CAM baseline reaches ~0.35-0.45
    assert floor < 0.16
    assert metrics["mIoU"] > floor + 0.15, (metrics["mIoU"], floor)
    assert json.loads((tmp_path / "metrics.json").read_text())["val/mIoU"] == pytest.approx(metrics["mIoU"])


def test_track_train_seeds_scores_the_first_training_images(tmp_path, synthetic_root):
    """method.track_train_seeds=N: the seed mIoU of the first N training images beside val, equal to validating the
    same model on exactly those images."""
    from wsss.engine import build_trainer

    quiet = ["trainer.enable_progress_bar=false", "dataset.num_workers=0", "dataset.batch_size=8", "logger=none"]
    cfg = compose_train_cfg(tmp_path, synthetic_root, quiet + [
        "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=3", "method.track_train_seeds=10"])
    fit(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 < saved["train_seeds/mIoU"] <= 1.0 and "val/mIoU" in saved
    model = load_method_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    check = compose_train_cfg(tmp_path / "check", synthetic_root, quiet + [
        "dataset.val_split=train", "+dataset.limit_val_samples=10"])
    dm = build_datamodule(check)
    build_trainer(check, enable_progress_bar=False).validate(model, datamodule=dm, verbose=False)
    assert model.last_val_metrics["mIoU"] == pytest.approx(saved["train_seeds/mIoU"], abs=1e-9)


def test_bf16_mixed_trains_on_cpu(tmp_path, synthetic_root):
    cfg = compose_train_cfg(tmp_path, synthetic_root, [
        "debug=fast", "trainer.precision=bf16-mixed", "trainer.accelerator=cpu", "logger=none"])
    metrics = fit(cfg)
    assert 0.0 <= metrics["mIoU"] <= 1.0


class _StopAt(pl.Callback):
    """Simulates a killed job: raise after `step` optimizer steps."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt


class _FirstStep(pl.Callback):
    def __init__(self):
        self.first = None

    def on_train_batch_start(self, trainer, *args):
        if self.first is None:
            self.first = trainer.global_step


def test_resume_continues_from_saved_step(tmp_path, synthetic_root):
    overrides = ["trainer.max_epochs=-1", "trainer.max_steps=10", "trainer.check_val_every_n_epoch=100",
                 "dataset.num_workers=0", "dataset.batch_size=8", "logger=none", "trainer.enable_progress_bar=false",
                 "callbacks.resume_checkpoint.every_n_train_steps=4"]
    cfg = compose_train_cfg(tmp_path, synthetic_root, overrides)
    from wsss.engine import build_trainer

    trainer = build_trainer(cfg)
    trainer.callbacks.append(_StopAt(6))
    model = build_method(cfg)
    with pytest.raises(SystemExit):  # Lightning shuts down gracefully on KeyboardInterrupt, then exits 1
        trainer.fit(model, datamodule=build_datamodule(cfg))
    assert trainer.interrupted
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 4

    cfg2 = compose_train_cfg(tmp_path, synthetic_root, overrides + [f"ckpt_path={last}"])
    trainer2 = build_trainer(cfg2)
    first = _FirstStep()
    trainer2.callbacks.append(first)
    trainer2.fit(build_method(cfg2), datamodule=build_datamodule(cfg2), ckpt_path=str(last))
    assert first.first == 4 and trainer2.global_step == 10


DDP_SCRIPT = textwrap.dedent("""
    import json, sys
    import pytorch_lightning as pl
    from conftest import compose_train_cfg
    from wsss.engine import build_datamodule, load_method_checkpoint


    class Dump(pl.Callback):
        def __init__(self, dest):
            self.dest = dest

        def on_validation_end(self, trainer, module):  # after the module's epoch-end compute
            if trainer.is_global_zero:
                json.dump({"confmat": module.last_val_metrics["confmat"], "world": trainer.world_size},
                          open(self.dest, "w"))


    if __name__ == "__main__":  # ddp_spawn re-imports this file in its workers
        out, data, ckpt, devices, dest = sys.argv[1:6]
        cfg = compose_train_cfg(out, data, ["dataset.num_workers=0", "dataset.val_batch_size=2", "logger=none"])
        model = load_method_checkpoint(ckpt)
        kw = dict(accelerator="cpu", devices=int(devices), logger=False, enable_progress_bar=False,
                  callbacks=[Dump(dest)])
        if int(devices) > 1:
            kw["strategy"] = "ddp_spawn"
        pl.Trainer(**kw).validate(model, datamodule=build_datamodule(cfg), verbose=False)
""")


@pytest.mark.slow
def test_torchrun_ddp_training_validates_like_one_process(tmp_path, synthetic_root):
    """`torchrun --nproc_per_node=2 -m wsss.train trainer=ddp` (2 gloo processes, the multi-node launch on one
    machine): its DDP validation equals validating the final checkpoint in one process, to the last bit."""
    from wsss.engine import build_trainer

    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541",
                           "-m", "wsss.train", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                           "trainer.sync_batchnorm=false", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=2",
                           "logger=none", "trainer.enable_progress_bar=false", "dataset.num_workers=0",
                           "dataset.batch_size=8", f"dataset.root={synthetic_root}", "dataset.synthetic=null",
                           f"hydra.run.dir={run_dir}"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((run_dir / "metrics.json").read_text())
    model = load_method_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    check = compose_train_cfg(tmp_path / "check", synthetic_root, ["logger=none", "dataset.num_workers=0"])
    build_trainer(check, enable_progress_bar=False).validate(model, datamodule=build_datamodule(check), verbose=False)
    assert TINY_SET["num_val"] % 2 == 1  # an odd split: a padding sampler would count one image twice
    assert model.last_val_metrics["mIoU"] == saved["val/mIoU"]
    assert model.last_val_metrics["IoU"] == saved["val/IoU"]


def test_ddp_validation_matches_single_process(tmp_path, synthetic_root):
    assert TINY_SET["num_val"] % 2 == 1  # DistributedSampler would pad a duplicate in
    cfg = compose_train_cfg(tmp_path / "train", synthetic_root, ["debug=fast", "logger=none"])
    fit(cfg)
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    script = tmp_path / "ddp_eval.py"
    script.write_text(DDP_SCRIPT)
    results = {}
    for devices in (1, 2):
        dest = tmp_path / f"conf{devices}.json"
        proc = subprocess.run([sys.executable, str(script), str(tmp_path / f"v{devices}"), str(synthetic_root),
                               str(ckpt), str(devices), str(dest)], capture_output=True, text=True, timeout=300,
                              env={**__import__("os").environ, "PYTHONPATH": f"{REPO / 'tests'}:{REPO}"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[devices] = json.loads(dest.read_text())
    assert results[2]["world"] == 2
    single, multi = np.asarray(results[1]["confmat"]), np.asarray(results[2]["confmat"])
    assert single.sum() > 0
    assert np.array_equal(single, multi)
