import numpy as np
import pytest
from PIL import Image

from wsss.data.formats import voc_palette
from wsss.viz import blend_label, colorize_label, overlay_grid, plot_curve, plot_per_class

PAL = np.asarray(voc_palette(), np.uint8).reshape(256, 3)


def test_colorize_and_blend():
    label = np.array([[0, 1], [15, 255]], np.uint8)
    rgb = colorize_label(label)
    np.testing.assert_array_equal(rgb[0, 1], PAL[1])
    np.testing.assert_array_equal(rgb[1, 1], PAL[255])
    image = np.full((2, 2, 3), 100, np.uint8)
    out = blend_label(image, label, alpha=0.5)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # background leaves the image
    np.testing.assert_array_equal(out[0, 1], np.rint(0.5 * 100 + 0.5 * PAL[1].astype(float)))
    with pytest.raises(ValueError, match="differ in size"):
        blend_label(np.zeros((3, 2, 3), np.uint8), label)


def test_overlay_grid_layout():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 60, 3), dtype=np.uint8), None, rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)]
    gts = [np.ones((40, 60), np.uint8), np.zeros((20, 20), np.uint8), np.full((30, 30), 255, np.uint8)]
    preds = [np.zeros((40, 60), np.uint8), None, np.ones((30, 30), np.uint8)]
    grid = overlay_grid(images, gts, preds, tile_height=32)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[0] == 3 * 32 + 2 * 4
    # widest row: 3 tiles of a 60x40 image scaled to height 32 (48 px) + 2 gaps
    assert grid.shape[1] == 3 * 48 + 2 * 4
    # row 1 column 3 (pred None) is blank white; row 0 tile 2 (GT class 1) is tinted red
    row1 = grid[32 + 4: 64 + 4]
    assert (row1[:, 2 * (32 + 4): 3 * 32 + 2 * 4] == 255).all()
    assert (row1[:, :32] == 128).all()  # no image: grey tile
    tile = grid[:32, 48 + 4: 96 + 4].astype(int)
    assert tile[..., 0].mean() > tile[..., 2].mean()
    assert overlay_grid(images, gts, max_rows=1, tile_height=32).shape == (32, 2 * 48 + 4, 3)
    with pytest.raises(ValueError):
        overlay_grid([], [])


def test_plots_write_png(tmp_path):
    t = [i / 100 for i in range(60)]
    v = [0.5 - (x - 0.2) ** 2 for x in t]
    path = plot_curve(t, v, tmp_path / "curve.png", best_index=20, extra={"mIoU (present)": v})
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 200
    names = ["background", "a", "b"]
    path = plot_per_class(names, [0.9, None, 0.3], tmp_path / "bars.png", title="x")
    with Image.open(path) as img:
        assert img.format == "PNG"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files
