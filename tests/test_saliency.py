"""supervision=saliency (EPS / HSC): the maps read as the references read them, a float target (bicubic or
bilinear, clipped to 0..1, padded with 0, never an integer map), and clear errors for bad files."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from wsss.data.formats import DataFormatError
from wsss.data.segmentation import SegmentationDataset, pad_collate
from wsss.data.supervision import SaliencySupervision, read_saliency
from wsss.data.voc import VOCLayout


def test_rgb_saliency_is_the_channel_mean(tmp_path):
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 51, 0
    Image.fromarray(rgb).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_saliency(tmp_path / "a.png"), (1.0 + 0.2 + 0.0) / 3, atol=1e-6)
    Image.fromarray(np.full((3, 4), 102, np.uint8), mode="L").save(tmp_path / "b.png")
    out = read_saliency(tmp_path / "b.png")
    assert out.dtype == np.float32 and np.allclose(out, 0.4)


def test_bad_saliency_files_are_named(tmp_path):
    Image.fromarray(np.zeros((5, 5), np.int32)).convert("I;16").save(tmp_path / "deep.png")
    with pytest.raises(DataFormatError, match="deep.png.*mode"):
        read_saliency(tmp_path / "deep.png")
    sup = SaliencySupervision()
    (tmp_path / "saliency").mkdir()
    sample = {"image": np.zeros((6, 8, 3), np.uint8)}
    with pytest.raises(FileNotFoundError, match=r"saliency/x\.png.*supervision\.loader\.saliency_dir"):
        sup(tmp_path, "x", dict(sample))
    Image.fromarray(np.zeros((6, 7), np.uint8)).save(tmp_path / "saliency" / "x.png")
    with pytest.raises(DataFormatError, match="6x7 but the image is 6x8"):
        sup(tmp_path, "x", dict(sample))


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_saliency_is_a_float_target_resized_and_padded_with_zero(synthetic_root, interpolation):
    transforms = [{"name": "RandomScale", "scale_limit": [0.5, 0.5], "interpolation": 2, "p": 1.0},
                  {"name": "PadIfNeeded", "min_height": 112, "min_width": 112, "position": "top_left",
                   "border_mode": 0, "fill": 0}]
    sup = SaliencySupervision(interpolation=interpolation)
    ds = SegmentationDataset(VOCLayout(synthetic_root), "train", 6, transforms=transforms, supervision=sup)
    s = ds[0]
    sal = s["saliency"]
    assert sal.dtype == torch.float32 and sal.shape == (112, 112)
    assert float(sal.min()) >= 0.0 and float(sal.max()) <= 1.0             # bicubic overshoot clipped
    assert (sal[96:] == 0).all() and (sal[:, 96:] == 0).all()              # padding is "not salient", not 255
    inner = sal[:96, :96]
    assert ((inner > 0.02) & (inner < 0.98)).float().mean() > 0.05          # values between levels: interpolated
    raw = read_saliency(synthetic_root / "saliency" / f"{ds.ids[0]}.png")
    ref = torch.nn.functional.interpolate(torch.from_numpy(raw)[None, None], size=(96, 96), mode="bilinear",
                                          align_corners=False)[0, 0]
    assert (inner - ref).abs().mean() < 0.03                                # it is the map, resized
    batch = pad_collate([s, {**ds[1], "image": ds[1]["image"][:, :100, :100], "saliency": ds[1]["saliency"][:100, :100],
                             "mask": ds[1]["mask"][:100, :100]}], ds.pad_values())
    assert (batch["saliency"][1, 100:] == 0).all() and (batch["mask"][1, 100:] == 255).all()


def test_supervision_saliency_config_gives_batches(train_cfg):
    from wsss.engine import build_datamodule

    cfg = train_cfg("supervision=saliency")
    dm = build_datamodule(cfg)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["saliency"].dtype == torch.float32 and batch["saliency"].shape == batch["image"][:, 0].shape
    assert 0.0 <= float(batch["saliency"].min()) and float(batch["saliency"].max()) <= 1.0
    cfg = train_cfg("supervision=saliency", "supervision.loader.saliency_dir=elsewhere")
    dm = build_datamodule(cfg)
    with pytest.raises(FileNotFoundError, match=r"48 of 48 saliency maps are missing.*elsewhere"):
        dm.setup("fit")   # before the first batch
