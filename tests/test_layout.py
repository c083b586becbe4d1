"""Layouts and target specs: a float map is resized bilinearly and padded with 0 while label maps keep nearest
and 255; a plain image folder trains and infers like VOC; every layout's DDP validation sampler is exact."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from wsss.data.datamodule import SegmentationDataModule
from wsss.data.densepose import DensePoseDataModule, write_synthetic_densepose
from wsss.data.image_folder import ImageFolderDataModule, ImageFolderLayout
from wsss.data.layout import Layout, layout_from_config
from wsss.data.samplers import UnpaddedDistributedSampler
from wsss.data.segmentation import SegmentationDataset
from wsss.data.targets import label_map, soft_map
from wsss.data.transforms import build_pipeline
from wsss.data.voc import VOCLayout
from wsss.inference.split import split_items

NAMES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle"]


def test_soft_map_is_bilinear_and_padded_with_zero_label_map_nearest_and_255():
    mask = np.array([[0, 1], [2, 3]], np.uint8)
    saliency = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    pipeline = build_pipeline([{"name": "Resize", "height": 4, "width": 4},
                               {"name": "PadIfNeeded", "min_height": 6, "min_width": 6, "border_mode": 0,
                                "fill": 0, "position": "top_left"}],
                              [label_map("mask"), soft_map("saliency")])
    out = pipeline(image=np.zeros((2, 2, 3), np.uint8), mask=mask, saliency=saliency)
    assert set(np.unique(out["mask"][:4, :4])) == {0, 1, 2, 3} and (out["mask"][4:] == 255).all()
    inner = out["saliency"][:4, :4]
    assert out["saliency"].dtype == np.float32 and ((inner > 0.01) & (inner < 0.99)).any()  # interpolated
    assert (out["saliency"][4:] == 0).all() and (out["saliency"][:, 4:] == 0).all()


def test_target_groups_share_the_random_geometry():
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 20, size=(40, 50)).astype(np.uint8)
    pipeline = build_pipeline([{"name": "RandomScale", "scale_limit": [0.0, 0.0], "p": 1.0},
                               {"name": "PadIfNeeded", "min_height": 48, "min_width": 56, "border_mode": 0, "fill": 0},
                               {"name": "RandomCrop", "height": 44, "width": 44},
                               {"name": "HorizontalFlip", "p": 0.5}],
                              [label_map("mask"), soft_map("saliency")])
    for _ in range(5):
        out = pipeline(image=np.zeros((40, 50, 3), np.uint8), mask=mask, saliency=mask.astype(np.float32) / 20)
        inside = out["mask"] != 255
        assert inside.any() and (~inside).any()
        np.testing.assert_allclose(out["saliency"][inside] * 20, out["mask"][inside], atol=1e-4)
        assert (out["saliency"][~inside] == 0).all()


class _Saliency:
    """A stand-in loader for the synthetic set's saliency maps (0..255 PNGs) as a soft target."""

    targets = (soft_map("saliency"),)

    def __call__(self, layout, image_id, sample):
        with Image.open(layout.root / "saliency" / f"{image_id}.png") as img:
            sample["saliency"] = np.asarray(img, np.float32) / 255.0


def test_dataset_casts_and_collate_pads_each_target_by_its_spec(synthetic_root):
    from wsss.data.segmentation import pad_collate

    ds = SegmentationDataset(VOCLayout(synthetic_root), "train", 6, supervision=_Saliency())
    a, b = ds[0], ds[1]
    assert a["saliency"].dtype == torch.float32 and a["mask"].dtype == torch.int64
    b = {**b, "image": b["image"][:, :-5], "mask": b["mask"][:-5], "saliency": b["saliency"][:-5]}
    batch = pad_collate([a, b], ds.pad_values())
    assert (batch["saliency"][1, -5:] == 0).all() and (batch["mask"][1, -5:] == 255).all()


@pytest.fixture
def image_folder(tmp_path, synthetic_root):
    """The synthetic set as a plain folder: images/, masks/, lists/ and no cls_labels (labels from masks)."""
    root = tmp_path / "folder"
    shutil.copytree(synthetic_root / "JPEGImages", root / "images")
    shutil.copytree(synthetic_root / "SegmentationClass", root / "masks")
    shutil.copytree(synthetic_root / "ImageSets" / "Segmentation", root / "lists")
    return root


def test_image_folder_trains_validates_and_infers_like_voc(image_folder, synthetic_root):
    assert isinstance(ImageFolderLayout(image_folder), Layout) and isinstance(VOCLayout(synthetic_root), Layout)
    dm = ImageFolderDataModule(str(image_folder), 6, NAMES, batch_size=4, val_batch_size=3, num_workers=0,
                               train_transforms=[{"name": "CropAtMost", "height": 48, "width": 48}])
    dm.setup("fit")
    batch, val = next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))
    assert batch["image"].shape[0] == 4 and "mask" not in batch and val["mask"].shape[0] == 3
    voc = SegmentationDataset(VOCLayout(synthetic_root), "val", 6)
    for i in range(3):
        assert torch.equal(dm.val_set[i]["cls"], voc[i]["cls"]) and torch.equal(dm.val_set[i]["mask"], voc[i]["mask"])
    cfg = OmegaConf.create({"_target_": "wsss.data.image_folder.ImageFolderDataModule", "root": str(image_folder),
                            "num_classes": 6, "class_names": NAMES})
    items = split_items(cfg, "val", 6)
    assert [it["id"] for it in items] == voc.ids and all(it["gt"] is not None for it in items)
    assert all(np.array_equal(it["label"], voc.cls_labels[it["id"]]) for it in items)
    shutil.rmtree(image_folder / "lists")  # no list: a split is every image
    assert len(layout_from_config(cfg).split_ids("anything")) == len(list((image_folder / "images").iterdir()))


def test_image_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"image folder not found: {tmp_path}/images"):
        ImageFolderLayout(tmp_path)


@pytest.mark.parametrize("make", ["voc", "densepose"])
def test_every_layout_validates_under_ddp_without_duplicates(make, synthetic_root, tmp_path, monkeypatch):
    if make == "voc":
        from wsss.data.voc import VOCDataModule

        dm: SegmentationDataModule = VOCDataModule(str(synthetic_root), 6, NAMES, train_split="train",
                                                   packaged_lists=False, num_workers=0)
    else:
        root = write_synthetic_densepose(tmp_path / "dp", num_train=2, num_val=3, image_size=(32, 32))
        dm = DensePoseDataModule(str(root), num_workers=0)
    dm.setup("validate")
    for name, value in (("is_available", True), ("is_initialized", True), ("get_world_size", 2), ("get_rank", 1)):
        monkeypatch.setattr(torch.distributed, name, lambda *a, v=value, **k: v)
    sampler = dm.val_dataloader().sampler
    assert isinstance(sampler, UnpaddedDistributedSampler)
    assert list(sampler) == list(range(1, len(dm.val_set), 2))
