"""Weak-label loaders: SPML's CAM/box rules, dilation, over-segmentation ids, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wsss.data.formats import save_score_dict, write_label_png
from wsss.data.supervision import (BoxSupervision, PointSupervision, ScribbleSupervision, TagSupervision,
                                   box_cam_labels, cam_to_labels, dilate_labels, read_segments)


def test_cam_rule_alpha_and_threshold():
    cams = np.zeros((2, 1, 4), np.float32)
    cams[0, 0] = [0.9, 0.15, 0.0, 0.3]
    cams[1, 0] = [0.1, 0.1, 0.0, 0.25]
    lab = cam_to_labels(cams, alpha=6, threshold=0.2)
    # bg = (1-max)^6: [1e-6, 0.377, 1, 0.118]; winners: fg1 0.9 | bg 0.377 | bg 1 | fg1 0.3
    assert lab.tolist() == [[1, 0, 0, 1]]
    cams[0, 0, 3] = 0.19
    cams[1, 0, 3] = 0.18   # bg = 0.81^6 = 0.28 wins
    assert cam_to_labels(cams, 6, 0.2)[0, 3] == 0
    cams[0, 0, 3] = 0.45   # bg = 0.55^6 = 0.028 < 0.45 > 0.2 -> class 1; with threshold 0.5 unlabelled
    assert cam_to_labels(cams, 6, 0.2)[0, 3] == 1 and cam_to_labels(cams, 6, 0.5)[0, 3] == 255


def test_box_rule_normalises_inside_each_box():
    cams = np.zeros((2, 6, 6), np.float32)
    cams[0, 1:4, 1:4] = [[0.1, 0.2, 0.1], [0.2, 0.4, 0.2], [0.1, 0.2, 0.1]]  # weak CAM, strong after min-max
    lab = box_cam_labels(cams, [(1, 1, 1, 3, 3)], alpha=6, threshold=0.5)
    assert lab[2, 2] == 1                       # (0.4-0.1)/0.3 = 1
    assert lab[1, 2] == 255                     # 1/3: neither class (bg 0.088) nor background wins by 0.5
    assert lab[1, 1] == 0                       # 0 inside the box -> bg = 1
    assert (lab[0] == 0).all() and (lab[:, 5] == 0).all()   # outside every box: background


def test_dilation_grows_labels_keeps_originals():
    weak = np.full((7, 7), 255, np.uint8)
    weak[3, 3] = 2
    weak[3, 4] = 1
    out = dilate_labels(weak, 3)
    assert out[3, 3] == 2 and out[3, 4] == 1
    assert out[2, 2] == 2 and out[2, 5] == 1 and out[0, 0] == 255
    assert (out != 255).sum() == 12


def test_segments_keep_255_free(tmp_path):
    ids = np.arange(300 * 2).reshape(20, 30) % 300
    Image.fromarray(ids.astype(np.int32)).convert("I;16").save(tmp_path / "s.png")
    seg = read_segments(tmp_path / "s.png")
    assert seg.dtype == np.uint16 and 255 not in seg and len(np.unique(seg)) == 300


def _root(tmp_path):
    (tmp_path / "hed").mkdir()
    (tmp_path / "scribble").mkdir()
    (tmp_path / "cam").mkdir()
    (tmp_path / "Annotations").mkdir()
    return tmp_path


def test_loaders_read_files_and_explain_missing_ones(tmp_path):
    root = _root(tmp_path)
    sample = {"image": np.zeros((8, 10, 3), np.uint8)}
    scr = np.full((8, 10), 255, np.uint8)
    scr[4, 5] = 3
    write_label_png(root / "scribble" / "a.png", scr)
    Image.fromarray(np.arange(80).reshape(8, 10).astype(np.uint8), mode="L").save(root / "hed" / "a.png")
    out = ScribbleSupervision(dilation=3)(root, "a", dict(sample))
    assert out["weak"][3:6, 4:7].tolist() == [[3] * 3] * 3 and out["segments"].max() == 79
    with pytest.raises(FileNotFoundError, match="points"):
        PointSupervision()(root, "a", dict(sample))
    with pytest.raises(FileNotFoundError, match="hed"):
        ScribbleSupervision(require_segments=True, segments_dir="nothing")(root, "a", dict(sample))
    # tag: SEAM score dict -> CAM rule; absent CAMs: no weak unless required
    save_score_dict(root / "cam" / "a.npy", {2: np.full((8, 10), 0.9, np.float32)})
    out = TagSupervision(num_classes=6)(root, "a", dict(sample))
    assert (out["weak"] == 3).all()
    assert "weak" not in TagSupervision(num_classes=6, cam_dir="none")(root, "a", dict(sample))
    with pytest.raises(FileNotFoundError, match="CAM"):
        TagSupervision(num_classes=6, cam_dir="none", require_weak=True)(root, "a", dict(sample))
    # box: XML boxes (1-based inclusive) + CAM
    (root / "Annotations" / "a.xml").write_text(
        "<annotation><object><name>bird</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>5</xmax><ymax>6</ymax>"
        "</bndbox></object></annotation>")
    names = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle"]
    out = BoxSupervision(class_names=names)(root, "a", dict(sample))
    assert out["weak"][0, 0] == 0 and set(np.unique(out["weak"][1:6, 1:5])) <= {3, 255}
