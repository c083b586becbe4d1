"""Same seed, same run: training on the CPU is bit-reproducible (metrics.json and final weights), with and without
DataLoader workers and with trainer.deterministic on or off; the augmentations follow the seed."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from conftest import compose_train_cfg
from wsss.data.transforms import build_pipeline
from wsss.engine import fit

SHORT = ["dataset.batch_size=8", "logger=none", "trainer.enable_progress_bar=false", "trainer.max_epochs=2",
         "trainer.check_val_every_n_epoch=2"]


def _run(out, root, *overrides):
    metrics = fit(compose_train_cfg(out, root, SHORT + list(overrides)))
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    return (out / "metrics.json").read_bytes(), state, metrics


def _assert_same(a, b):
    assert a[0] == b[0], "metrics.json differs"
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        assert torch.equal(a[1][k], b[1][k]), k


@pytest.mark.parametrize("workers,deterministic", [(0, "true"), (2, "false")])
def test_same_seed_same_run(tmp_path, synthetic_root, workers, deterministic):
    args = [f"dataset.num_workers={workers}", f"trainer.deterministic={deterministic}", "seed=3"]
    first = _run(tmp_path / "a", synthetic_root, *args)
    second = _run(tmp_path / "b", synthetic_root, *args)
    _assert_same(first, second)
    assert json.loads(first[0])["val/mIoU"] == first[2]["mIoU"]


def test_seed_changes_the_run(tmp_path, synthetic_root):
    """The check above is not vacuous: another seed trains another model."""
    base = ["dataset.num_workers=0", "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1"]
    a = _run(tmp_path / "a", synthetic_root, *base, "seed=3")
    b = _run(tmp_path / "b", synthetic_root, *base, "seed=4")
    assert any(not torch.equal(a[1][k], b[1][k]) for k in a[1])


SPECS = [{"name": "RandomCrop", "height": 8, "width": 8}, {"name": "HorizontalFlip", "p": 0.5}]


class _Crops(Dataset):
    def __init__(self):
        self.pipeline = build_pipeline(SPECS)
        self.image = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.from_numpy(self.pipeline(image=self.image)["image"].copy())


def _crops(workers, seed):
    torch.manual_seed(seed)
    return [b for b in DataLoader(_Crops(), batch_size=1, num_workers=workers)]


def test_augmentations_follow_the_seed():
    """albumentations 2.x seeds A.Compose from OS entropy and ignores torch / numpy seeds; wsss's pipelines
    follow torch's seed, in the main process and in each DataLoader worker, and the workers differ."""
    same = _crops(0, 7), _crops(0, 7)
    assert all(torch.equal(x, y) for x, y in zip(*same))
    assert not all(torch.equal(x, y) for x, y in zip(same[0], _crops(0, 8)))
    workers = _crops(2, 7), _crops(2, 7)
    assert all(torch.equal(x, y) for x, y in zip(*workers))
    # batch i comes from worker i % 2: two workers with one shared random stream would give pairs of equal crops
    assert not all(torch.equal(workers[0][i], workers[0][i + 1]) for i in range(0, 8, 2))
