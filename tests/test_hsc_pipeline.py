"""HSC end to end on a VOC-layout folder (tests/vocgen.py): `wsss.infer` of an HSC model (its recipe: scales
0.5-2 + flip, labelled classes, CRF hsc), `wsss.pseudo_label ... crf=hsc` on its scores of train_aug, and
`experiment=hsc_voc_deeplab` training on those labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image

from conftest import CONF_DIR
from test_configs import SIZES, compose_run, fast_dev_run
from vocgen import write_voc_folder
from wsss.data.formats import read_label_png, read_split_list
from wsss.infer import run as infer
from wsss.methods.hsc import HSCModule
from wsss.pseudo_label import run as pseudo_label


def _compose(name, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


@pytest.mark.slow
def test_infer_pseudo_label_crf_hsc_and_deeplab_second_stage(tmp_path):
    root = write_voc_folder(tmp_path / "VOC2012", num_train=4, num_val=2, size_range=(64, 90), weak=True)
    names = ["background"] + [f"c{i}" for i in range(20)]
    pl.seed_everything(0)
    recipe = _compose("train", "method=hsc", "dataset=voc", f"dataset.root={root}").method.inference
    model = HSCModule(backbone={"name": "tiny"}, num_classes=21, class_names=names,
                      bg={"rule": "threshold", "threshold": 0.22}, inference=dict(recipe)).eval()
    assert model.inference["crf"] == "hsc" and model.inference["classes"] == "label"

    scores = tmp_path / "infer"
    cfg = _compose("infer", "ckpt=unused", f"dataset.root={root}", "split=train_aug", "device=cpu", "loader_workers=0",
                   "workers=1", "progress=false", "dataset.packaged_lists=false")
    with open_dict(cfg):
        cfg.out_dir = str(scores)
    infer(cfg, model)
    ids = read_split_list(root / "ImageSets" / "Segmentation" / "train_aug.txt")
    for i in ids:
        d = np.load(scores / "scores" / f"{i}.npy", allow_pickle=True).item()
        gt = read_label_png(root / "SegmentationClassAug" / f"{i}.png")
        present = sorted(int(c) - 1 for c in np.unique(gt) if 0 < c < 255)
        assert sorted(d) == present                                       # GT-labelled classes only (labels from masks)
        assert all(v.max() <= 1.0 + 1e-6 for v in d.values())            # divided by the maximum
        assert (scores / "crf" / f"{i}.png").is_file()                     # method.inference.crf = hsc

    pseudo = tmp_path / "pseudo"
    cfg = _compose("pseudo_label", f"scores_dir={scores / 'scores'}", "dataset=voc", f"dataset.root={root}", "split=train_aug",
                   "crf=hsc", "progress=false", "workers=0", "dataset.packaged_lists=false")
    with open_dict(cfg):
        cfg.paths.output_dir = str(pseudo)
    res = pseudo_label(cfg)
    assert res["written"] == len(ids)
    for i in ids:  # the reference CRF over background + the labelled classes: no other class appears
        d = np.load(scores / "scores" / f"{i}.npy", allow_pickle=True).item()
        lab = np.asarray(Image.open(pseudo / f"{i}.png"))
        assert set(np.unique(lab)) <= {0} | {k + 1 for k in d}
        assert np.array_equal(lab, np.asarray(Image.open(scores / "crf" / f"{i}.png")))  # same CRF as wsss.infer's

    cfg, choices = compose_run(["experiment=hsc_voc_deeplab"] + SIZES, root, tmp_path / "deeplab")
    assert choices["backbone"] == "resnet101_deepstem" and cfg.dataset.train_split == "train_aug"
    with open_dict(cfg):
        cfg.dataset.pseudo_label_dir = str(pseudo)
        cfg.backbone = {"name": "tiny"}   # the recipe's ResNet-101 is test_configs' (slow) business
    fast_dev_run(cfg)
