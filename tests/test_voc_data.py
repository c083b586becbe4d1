"""VOC datamodule: real packaged lists/labels, SEAM-form lists, the synthetic layout, bad input."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsss.data.formats import (DataFormatError, load_cls_labels, read_label_png, read_split_list,
                               write_label_png)
from wsss.data.voc import VOCDataModule, VOCSegmentation, packaged_voc12_file, pad_collate

# sha256 of the packaged files, recorded when they were checked equal to SEAM's real lists and cls_labels.npy
# (the equality check needs ../shared/data/voc12, which a fresh clone lacks; these hashes do not)
PACKAGED_SHA256 = {
    "train.txt": "aa623bd2c8ce4443a8aaae51c524c0eb165e8e44caf6aa9e3ad33d7b75a3ef20",
    "val.txt": "cdc1326d12f69ce5153aa5da04a4d8783e146868d42d19f82f44e74b97ac907d",
    "train_aug.txt": "d1326bd532648d73bc4b1bd275434eba81930982dc7401a65a8cecb26c028e24",
    "test.txt": "5e8fe0c14b2e6633fb2e3a0f5db65fb6b8f5217b574478bb21127a48fd33010f",
    "cls_labels.txt": "5570aed8cae15817b8ef680790f9de9e6d3e75b8aa887bc0ddf6a1938a92fc99",
}


def test_packaged_lists_and_labels_are_the_real_files():
    import hashlib

    for name, digest in PACKAGED_SHA256.items():
        assert hashlib.sha256(packaged_voc12_file(name).read_bytes()).hexdigest() == digest, name
    lists = {}
    for split, n in [("train", 1464), ("val", 1449), ("train_aug", 10582), ("test", 1456)]:
        lists[split] = read_split_list(packaged_voc12_file(f"{split}.txt"))
        assert len(lists[split]) == n == len(set(lists[split]))
    assert set(lists["train"]) <= set(lists["train_aug"]) and not set(lists["train_aug"]) & set(lists["val"])
    labels = load_cls_labels(packaged_voc12_file("cls_labels.txt"))
    assert len(labels) == 12031 and set(lists["train_aug"]) | set(lists["val"]) <= labels.keys()
    assert all(v.shape == (20,) and v.sum() >= 1 for v in labels.values())
    assert not packaged_voc12_file("cls_labels.txt").read_bytes().startswith(b"\x93NUMPY")


def _voc_root(tmp_path: Path, synthetic_root: Path, ids=("2007_000032", "2007_000039")) -> Path:
    """A VOC-devkit root with real VOC ids but no lists or labels: wsss must fall back to packaged ones."""
    root = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass"):
        (root / sub).mkdir(parents=True)
    src = sorted((synthetic_root / "JPEGImages").iterdir())
    for image_id, path in zip(ids, src):
        shutil.copy(path, root / "JPEGImages" / f"{image_id}.jpg")
        shutil.copy(synthetic_root / "SegmentationClass" / f"{path.stem}.png",
                    root / "SegmentationClass" / f"{image_id}.png")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    return root


def test_voc_ids_take_labels_from_the_roots_masks(tmp_path, synthetic_root):
    """A VOC-layout set that is not VOC may reuse VOC's ids: its own masks win over the packaged VOC labels."""
    root = _voc_root(tmp_path, synthetic_root)
    (root / "ImageSets" / "Segmentation" / "mini.txt").write_text("2007_000032\n2007_000039\n")
    sample = VOCSegmentation(root, "mini", num_classes=21, packaged_fallback=True, load_mask=False)[0]
    mask = read_label_png(root / "SegmentationClass" / "2007_000032.png")
    present = sorted(int(c) - 1 for c in np.unique(mask) if 0 < c < 255)
    assert torch.nonzero(sample["cls"]).flatten().tolist() == present != [0, 14]


def test_real_voc_ids_use_packaged_labels(tmp_path, synthetic_root):
    root = _voc_root(tmp_path, synthetic_root)
    shutil.rmtree(root / "SegmentationClass")  # no masks: the labels can only come from the packaged file
    (root / "ImageSets" / "Segmentation" / "mini.txt").write_text(
        "/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n"
        "/JPEGImages/2007_000039.jpg /SegmentationClassAug/2007_000039.png\n")
    ds = VOCSegmentation(root, "mini", num_classes=21, packaged_fallback=True, load_mask=False)
    sample = ds[0]
    assert sample["name"] == "2007_000032"
    # real VOC label of 2007_000032: aeroplane + person (from the packaged cls_labels)
    assert torch.nonzero(sample["cls"]).flatten().tolist() == [0, 14]
    assert sample["image"].dtype == torch.float32 and sample["image"].shape[0] == 3
    with pytest.raises(FileNotFoundError, match="split list 'nosuch' not found"):
        VOCSegmentation(root, "nosuch", num_classes=21, packaged_fallback=True)


def test_synthetic_layout_datamodule(synthetic_root):
    dm = VOCDataModule(str(synthetic_root), num_classes=6, class_names=list("abcdef"), train_split="train",
                       val_split="val", batch_size=4, val_batch_size=3, num_workers=0, packaged_lists=False,
                       train_transforms=[{"name": "RandomScale", "scale_limit": [-0.2, 0.2], "p": 1.0},
                                         {"name": "PadIfNeeded", "min_height": 64, "min_width": 64},
                                         {"name": "RandomCrop", "height": 64, "width": 64},
                                         {"name": "HorizontalFlip", "p": 0.5}])
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["cls"].shape == (4, 5)
    assert "mask" not in batch  # weakly supervised training never sees GT masks
    val = next(iter(dm.val_dataloader()))
    assert val["mask"].shape[0] == 3 and set(val["mask"].unique().tolist()) <= set(range(6)) | {255}
    labels = load_cls_labels(synthetic_root / "cls_labels.npy", 5)
    for name, cls, mask in zip(val["name"], val["cls"], val["mask"]):
        present = {c - 1 for c in mask.unique().tolist() if 0 < c < 255}
        assert set(torch.nonzero(cls).flatten().tolist()) == present
        assert np.array_equal(cls.numpy(), labels[name])


def test_labels_derived_from_masks_without_cls_labels(tmp_path, synthetic_root):
    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    (root / "cls_labels.npy").unlink()
    ds = VOCSegmentation(root, "val", num_classes=6)
    s = ds[0]
    present = {c - 1 for c in s["mask"].unique().tolist() if 0 < c < 255}
    assert set(torch.nonzero(s["cls"]).flatten().tolist()) == present


def test_pad_collate_fills_labels_with_255():
    a = {"image": torch.ones(3, 4, 5), "mask": torch.zeros(4, 5, dtype=torch.long), "name": "a"}
    b = {"image": torch.ones(3, 6, 3), "mask": torch.ones(6, 3, dtype=torch.long), "name": "b"}
    out = pad_collate([a, b])
    assert out["image"].shape == (2, 3, 6, 5) and out["mask"][0, 5, 0] == 255 and out["mask"][1, 0, 4] == 255
    assert out["image"][1, 0, 0, 4] == 0 and out["name"] == ["a", "b"]


# ----- bad input: one clear error naming the file ------------------------------------------------
@pytest.fixture
def broken_root(tmp_path, synthetic_root):
    root = tmp_path / "broken"
    shutil.copytree(synthetic_root, root)
    return root


def _first_val(root):
    return read_split_list(root / "ImageSets/Segmentation/val.txt")[0]


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset root not found: .*nowhere.*dataset.root="):
        VOCSegmentation(tmp_path / "nowhere", "val", num_classes=6)


def test_missing_image(broken_root):
    image_id = _first_val(broken_root)
    (broken_root / "JPEGImages" / f"{image_id}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=rf"1 images named in split 'val'.*JPEGImages/{image_id}.jpg"):
        VOCSegmentation(broken_root, "val", num_classes=6)


def test_missing_mask(broken_root):
    image_id = _first_val(broken_root)
    (broken_root / "SegmentationClass" / f"{image_id}.png").unlink()
    with pytest.raises(DataFormatError, match=rf"(?s)1 of 17 GT masks.*SegmentationClass/{image_id}.png: missing"):
        VOCSegmentation(broken_root, "val", num_classes=6)


def test_rgb_mask_refused(broken_root):
    image_id = _first_val(broken_root)
    path = broken_root / "SegmentationClass" / f"{image_id}.png"
    Image.open(path).convert("RGB").save(path)
    with pytest.raises(DataFormatError, match=rf"{image_id}.png: mode 'RGB'; label maps must be palette"):
        VOCSegmentation(broken_root, "val", num_classes=6)


def test_class_id_out_of_range(broken_root):
    image_id = _first_val(broken_root)
    path = broken_root / "SegmentationClass" / f"{image_id}.png"
    label = np.asarray(Image.open(path)).copy()
    label[0, 0] = 17
    write_label_png(path, label)
    with pytest.raises(DataFormatError, match=rf"{image_id}.png: class ids \[17\] outside 0..5"):
        VOCSegmentation(broken_root, "val", num_classes=6)


def test_unreadable_image(broken_root):
    image_id = _first_val(broken_root)
    (broken_root / "JPEGImages" / f"{image_id}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataFormatError, match=rf"{image_id}.jpg: not a readable image"):
        VOCSegmentation(broken_root, "val", num_classes=6)


def test_missing_split_list(broken_root):
    with pytest.raises(FileNotFoundError, match=r"split list 'val2' not found: .*ImageSets/Segmentation/val2.txt"):
        VOCSegmentation(broken_root, "val2", num_classes=6)


def test_valid_mask_marks_crop_padding(synthetic_root):
    """dataset.valid_mask=true: `valid` is 1 on image pixels, 255 where a crop padded (and where collate pads)."""
    from wsss.data.voc import is_valid_pixel

    ds = VOCSegmentation(synthetic_root, "train", 6, load_mask=False, valid_mask=True,
                         transforms=[{"name": "PadIfNeeded", "min_height": 80, "min_width": 72, "border_mode": 0,
                                      "fill": 0, "position": "top_left"}])
    sample = ds[0]
    valid = is_valid_pixel(sample["valid"])
    h, w = sample["size"].tolist()
    assert valid.shape == (80, 72)
    assert valid[:h, :w].all() and not valid[h:].any() and not valid[:, w:].any()
    assert "valid" not in VOCSegmentation(synthetic_root, "train", 6, load_mask=False)[0]
