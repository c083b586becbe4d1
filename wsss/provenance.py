"""What a run folder says about how its numbers were made: ``run.json``.

Why: a number without its code version, libraries, device, seed, checkpoint and protocol cannot be compared
or reproduced, and WSSS papers' numbers are often exactly that. Every tool (train, infer, evaluate,
pseudo_label, predict, pipeline) writes ``<run folder>/run.json`` when it starts (``status: running``, so a
crashed run still says what it was) and again when it ends (``status: done``, wall time):

* ``wsss``: version, and the git commit of the source tree with whether it had uncommitted changes;
* ``python``, ``platform``, ``libraries`` (torch, pytorch_lightning, hydra, numpy, ...), ``device``;
* ``seed``, ``command`` (argv), ``overrides`` and Hydra's config-group ``choices``;
* the tool's own facts (``details``): e.g. the checkpoint scored (path, epoch, step) and whether ground-truth
  image labels restricted the prediction.
"""
from __future__ import annotations

import functools
import json
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Mapping, Optional

from wsss.data.formats import atomic_write_bytes

RUN_FILE = "run.json"
LIBRARIES = ("torch", "torchvision", "pytorch-lightning", "hydra-core", "omegaconf", "torchmetrics", "numpy",
             "albumentations", "pydensecrf2", "wandb")


def _version(dist: str) -> Optional[str]:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def source_state() -> dict:
    """wsss's version and, for a git checkout, its commit and whether the tree had uncommitted changes."""
    root = Path(__file__).resolve().parents[1]
    state = {"version": _version("wsss"), "commit": None, "dirty": None}
    if not (root / ".git").exists():
        return state
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git on this machine: the version alone
        return state
    if commit.returncode == 0:
        state.update(commit=commit.stdout.strip(), dirty=bool(status.stdout.strip()))
    return state


def libraries() -> dict:
    """Installed versions; torch's own string, which also says the build (``2.14.1+cu130``)."""
    import torch

    return {**{d: _version(d) for d in LIBRARIES}, "torch": torch.__version__}


def device_info() -> dict:
    import torch

    info = {"cuda": torch.cuda.is_available(), "torch_cuda_build": torch.version.cuda,
            "cpu_threads": torch.get_num_threads()}
    if info["cuda"]:
        info.update(gpus=torch.cuda.device_count(), gpu_name=torch.cuda.get_device_name(0))
    return info


def hydra_context() -> dict:
    """The command line's overrides and config-group choices (empty outside ``@hydra.main``)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        if not HydraConfig.initialized():
            return {}
        hc = HydraConfig.get()
        choices = {k: v for k, v in OmegaConf.to_container(hc.runtime.choices).items()
                   if k != "hydra" and not k.startswith("hydra/")}
        return {"overrides": list(hc.overrides.task), "choices": choices}
    except Exception:  # noqa: BLE001 - no Hydra context: nothing to add
        return {}


def run_record(tool: str, seed=None, details: Optional[Mapping] = None) -> dict:
    return {"schema": "wsss.run/2", "tool": tool, "status": "running", "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "wsss": source_state(), "python": sys.version.split()[0], "platform": platform.platform(),
            "libraries": libraries(), "device": device_info(), "seed": seed,
            "command": list(sys.argv), **hydra_context(), "details": dict(details or {})}


def write_run(out_dir: Path, record: Mapping) -> Path:
    path = Path(out_dir) / RUN_FILE
    atomic_write_bytes(path, (json.dumps(record, indent=2, default=str) + "\n").encode())
    return path


class RunRecord:
    """``run.json`` of one tool run: written at start, updated with details, closed with the wall time."""

    def __init__(self, out_dir: Path, record: dict):
        self.out_dir, self.start, self.record = Path(out_dir), time.time(), record
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_run(self.out_dir, self.record)

    @classmethod
    def start_tool(cls, out_dir: Path, tool: str, seed=None, details: Optional[Mapping] = None) -> "RunRecord":
        return cls(out_dir, run_record(tool, seed, details))

    def update(self, **details) -> None:
        self.record["details"].update(details)
        write_run(self.out_dir, self.record)

    def finish(self, status: str = "done", **details) -> None:
        self.record["details"].update(details)
        self.record.update(status=status, wall_s=round(time.time() - self.start, 3),
                           finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        write_run(self.out_dir, self.record)


def checkpoint_facts(path) -> dict:
    """Path, epoch and step of a wsss Lightning checkpoint (None for an authors' file or a folder)."""
    import torch

    facts = {"path": str(Path(str(path)).expanduser().absolute()), "epoch": None, "global_step": None}
    p = Path(str(path)).expanduser()
    if p.is_file():
        try:
            obj = torch.load(p, map_location="cpu", weights_only=False, mmap=True)
        except Exception:  # noqa: BLE001 - an authors' file in another format: no epoch to report
            return facts
        if isinstance(obj, dict):
            facts.update(epoch=obj.get("epoch"), global_step=obj.get("global_step"))
    return facts
