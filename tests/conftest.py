"""Shared fixtures: a tiny synthetic VOC set and Hydra config composition for in-process runs."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
SHARED = REPO.parent / "shared"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

TINY_SET = dict(num_train=48, num_val=17, image_size=(64, 64), num_classes=6, seed=0)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    from wsss.data.synthetic import ensure_synthetic_voc

    return ensure_synthetic_voc(tmp_path_factory.mktemp("data") / "synthetic", **TINY_SET)


def compose_train_cfg(output_dir: Path, data_root: Path | None = None, overrides=()):
    """The ``train`` config as ``python -m wsss.train`` would compose it, with outputs in ``output_dir``."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        if data_root is not None:
            cfg.dataset.root = str(data_root)
            if cfg.dataset.get("synthetic") is not None:
                cfg.dataset.synthetic = {k: (list(v) if isinstance(v, tuple) else v) for k, v in TINY_SET.items()}
                cfg.dataset.synthetic_home = None  # explicit: the tiny set lives at data_root
    return cfg


@pytest.fixture
def train_cfg(tmp_path, synthetic_root):
    def make(*overrides):
        return compose_train_cfg(tmp_path / "run", synthetic_root, overrides)

    return make


def python_exe() -> str:
    return sys.executable


def constant_background_miou(cfg) -> float:
    """mIoU of predicting background everywhere on the config's val set (the 'learned nothing' floor)."""
    import numpy as np

    from wsss.engine import build_datamodule
    from wsss.metrics import scores_from_confusion

    dm = build_datamodule(cfg)
    dm.setup("validate")
    conf = np.zeros((cfg.dataset.num_classes,) * 2, dtype=np.int64)
    for i in range(len(dm.val_set)):
        gt = dm.val_set[i]["mask"].numpy().ravel()
        gt = gt[gt != 255]
        np.add.at(conf, (gt, np.zeros_like(gt)), 1)
    return scores_from_confusion(conf)["mIoU"]


@pytest.fixture
def one_thread():
    """Tiny convolutions: one torch thread is fastest and immune to a busy second core (barrier spinning)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def voc_folder(tmp_path_factory) -> Path:
    """A small VOC 2012-layout folder from tests/vocgen.py (21 classes, 6 train / 3 val images, weak labels)."""
    from vocgen import write_voc_folder

    return write_voc_folder(tmp_path_factory.mktemp("vocgen") / "VOC2012", num_train=6, num_val=3,
                            size_range=(72, 100), weak=True)
