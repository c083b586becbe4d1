"""SPML learns on the synthetic set under every supervision type, and DensePose-layout data trains (CPU, short)."""
from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from wsss.data.densepose import DensePoseDataModule, PART_NAMES
from wsss.data.supervision import SUPERVISIONS
from wsss.data.voc import VOCDataModule
from wsss.optim import method_optim
from wsss.methods.spml import SPMLModule

EPOCHS = {}  # per-supervision overrides of the default 20
NAMES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle"]


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("spml_syn") / "voc")


def small_spml(num_classes, names, **kw):
    return SPMLModule(backbone={"name": "tiny"}, num_classes=num_classes, class_names=names, upsample=1,
                      kmeans={"num_clusters": [3, 3], "iterations": 5}, memory_bank_size=1, dropout=0.1,
                      optim=method_optim("spml", lr=0.01), scheduler={"name": "poly", "power": 0.9}, **kw)


def fit(model, dm, epochs):
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, num_sanity_val_steps=0, check_val_every_n_epoch=epochs,
                         enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    return model.last_val_metrics


@pytest.mark.parametrize("supervision", ["scribble", "point", "box", "tag"])
def test_spml_learns_under_each_supervision(voc_root, supervision):
    pl.seed_everything(0)
    kwargs = {"class_names": NAMES} if supervision == "box" else {"num_classes": 6}
    sup = SUPERVISIONS[supervision](**kwargs)
    dm = VOCDataModule(voc_root, num_classes=6, class_names=NAMES, train_split="train", val_split="val",
                       batch_size=8, val_batch_size=8, num_workers=0, packaged_lists=False,
                       synthetic={"num_train": 32, "num_val": 16, "image_size": [64, 64], "num_classes": 6, "seed": 0},
                       train_transforms=[{"name": "HorizontalFlip", "p": 0.5}], supervision=sup)
    metrics = fit(small_spml(6, NAMES), dm, epochs=EPOCHS.get(supervision, 20))
    # all-background prediction scores about 0.8 / 6 = 0.13; require far above that
    assert metrics["mIoU"] > 0.3, metrics
    fg = [v for k, v in metrics["IoU"].items() if k != "background" and v is not None]
    assert sum(v > 0.1 for v in fg) >= 3, metrics


def test_densepose_layout_trains_a_few_steps(tmp_path):
    pl.seed_everything(0)
    dm = DensePoseDataModule(str(tmp_path / "dp"), batch_size=4, val_batch_size=4, num_workers=0,
                             synthetic={"num_train": 8, "num_val": 4, "image_size": [64, 64]},
                             train_transforms=[], val_transforms=[])
    model = small_spml(15, PART_NAMES, local_features="location_color", loc_embedding_scale=0.1, head="pspp",
                       embedding_dim=16, head_channels=32,
                       losses={"sem_occ": {"weight": 0.0}, "img_sim": {"features": "embedding"},
                               "feat_aff": {"weight": 0.5, "concentration": 12}})
    before = [p.detach().clone() for p in model.head.parameters()]
    metrics = fit(model, dm, epochs=2)
    assert np.isfinite(metrics["mIoU"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.head.parameters()))
