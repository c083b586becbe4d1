"""DensePose layout: reading, left/right part swap on flips, split lists in the reference's format."""
from __future__ import annotations

import numpy as np
import pytest

from wsss.data.densepose import PART_FLIP, PART_NAMES, DensePoseParts, write_synthetic_densepose


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_synthetic_densepose(tmp_path_factory.mktemp("dp"), num_train=3, num_val=2, image_size=(48, 40))


def test_part_flip_swaps_left_and_right():
    for i, name in enumerate(PART_NAMES):
        other = PART_NAMES[PART_FLIP[i]]
        assert other == name.replace("left", "#").replace("right", "left").replace("#", "right")
    assert PART_FLIP[255] == 255


def test_sample_loads_and_flip_swaps_parts(root):
    ds = DensePoseParts(root, "train2014")
    s = ds[0]
    assert s["image"].shape == (3, 48, 40) and s["cls"].shape == (14,)
    assert set(np.unique(s["weak"].numpy())) - {255} <= set(range(15))
    flipped = DensePoseParts(root, "train2014", flip_prob=1.0)[0]
    mask, fmask = s["mask"].numpy(), flipped["mask"].numpy()
    np.testing.assert_array_equal(fmask, PART_FLIP[mask[:, ::-1]])
    # the person's right hand (image left) becomes its left hand on the image right
    ys, xs = np.nonzero(mask == 2)
    fys, fxs = np.nonzero(fmask == 3)
    assert xs.mean() < 20 < fxs.mean()
    np.testing.assert_array_equal(flipped["segments"].numpy(), s["segments"].numpy()[:, ::-1])


def test_reference_list_format_and_missing_files(root, tmp_path):
    ids = DensePoseParts(root, "minival2014").ids
    ref_list = tmp_path / "panoptic_minival2014.txt"
    ref_list.write_text("".join(f"images/val2014/{i}.jpg segcls/densepose/gray/{i}.png x\n" for i in ids))
    assert DensePoseParts(root, str(ref_list)).ids == ids
    with pytest.raises(FileNotFoundError, match="split list"):
        DensePoseParts(root, "nosuchsplit")
    ds = DensePoseParts(root, "minival2014", segments_dir="seginst/missing")
    with pytest.raises(FileNotFoundError, match="over-segmentation"):
        ds[0]
