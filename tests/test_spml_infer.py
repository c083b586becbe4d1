"""SPML through ``wsss.infer.run`` predicts as the reference's inference scripts (twke18/SPML@0800afd).

Fixture ``tests/fixtures/spml/infer_voc12.npz`` (README: how it was made): the unchanged
``inference_softmax_msc.py`` and ``inference_softmax.py`` on seeded weights and one 41x57 JPEG, with crop 48 /
stride 32 so that the window slides (and overlaps) at scales >= 1."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import CONF_DIR
from test_infer import infer_cfg
from test_spml_parity import FIX, release, voc_model  # noqa: F401 (release is a fixture)
from wsss.data.formats import load_score_dict
from wsss.infer import run

REF = np.load(FIX / "infer_voc12.npz")
H, W = REF["image"].shape[:2]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("spml_voc") / "VOC"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    shutil.copy(FIX / "infer_image.jpg", root / "JPEGImages" / "img.jpg")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("img\n")
    decoded = np.asarray(Image.open(root / "JPEGImages" / "img.jpg").convert("RGB"))
    if not np.array_equal(decoded, REF["image"]):
        pytest.skip("this Pillow decodes the fixture JPEG differently from the one the fixture was made with")
    return root


def model_for(release: Path, **kw):
    """The VOC release with the inference recipe of ``conf/method/spml.yaml`` (crop / stride of the fixture)."""
    method = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "method" / "spml.yaml"))
    model = voc_model(inference=method["inference"], test_crop_size=int(REF["crop"]),
                      test_stride=int(REF["stride"]), **kw)
    model.load_official(str(release))
    with torch.no_grad():
        model.classifier[4].bias.zero_()  # the fixture's weights (README): else one class wins everywhere
    return model.eval()


def outputs(out: Path):
    pred = np.asarray(Image.open(out / "pred" / "img.png"))
    scores = load_score_dict(out / "scores" / "img.npy", shape=(H, W), num_fg=20)
    return pred, scores


def test_msc_matches_inference_softmax_msc(tmp_path, release, voc_root):
    """The default recipe (5 scales + flip, cv2 pyramid, padded sliding windows): summed probabilities to 1e-4."""
    model = model_for(release)
    assert model.inference["scales"] == [0.5, 0.75, 1.0, 1.25, 1.5] and model.inference["flip"]
    assert model.inference["resize"] == "cv2_bilinear"
    cfg = infer_cfg(voc_root, tmp_path / "out", "crf=none", "classes=all")
    run(cfg, model)
    pred, scores = outputs(tmp_path / "out")
    probs = np.stack([scores[k] for k in range(20)])  # foreground, renormalised: reference sum / 10 maps
    rows, cols = REF["rows"], REF["cols"]
    ref = REF["probs_msc_grid"] / 10.0
    assert np.abs(probs[:, rows][:, :, cols] - ref[1:]).max() < 1e-4 / 10.0
    # the full-resolution check: the winning class's summed probability at every pixel
    ref_labels = REF["labels_msc"]
    fg = ref_labels > 0
    won = probs[np.clip(ref_labels.astype(int) - 1, 0, 19), np.arange(H)[:, None], np.arange(W)[None]]
    assert np.abs(won[fg] - REF["probs_msc_max"][fg] / 10.0).max() < 1e-4 / 10.0
    assert len(np.unique(ref_labels)) >= 3
    np.testing.assert_array_equal(pred, ref_labels)


def test_single_scale_matches_inference_softmax(tmp_path, release, voc_root):
    """``method.test_image_size=N scales=[1.0] flip=false``: longer side to N first, labels back by nearest."""
    model = model_for(release, test_image_size=int(REF["image_size"]))
    cfg = infer_cfg(voc_root, tmp_path / "out", "crf=none", "scales=[1.0]", "flip=false", "classes=all")
    run(cfg, model)
    pred, scores = outputs(tmp_path / "out")
    probs = np.concatenate([1.0 - sum(scores.values())[None], np.stack([scores[k] for k in range(20)])])
    top2 = np.sort(probs, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 1e-5  # ties could go either way between machines
    assert clear.mean() > 0.99 and len(np.unique(REF["labels_single"])) >= 3
    np.testing.assert_array_equal(pred[clear], REF["labels_single"][clear])


def test_single_scale_needs_one_scale(release):
    model = model_for(release, test_image_size=64)
    x = torch.zeros(1, 3, 20, 30)
    with pytest.raises(ValueError, match=r"scales=\[1.0\]"):
        model.multiscale_raw_scores([x, x], (20, 30))


def test_cv2_pyramid_sizes():
    from wsss.inference.data import image_pyramid

    image = REF["image"]
    sizes = [tuple(t.shape[-2:]) for t in image_pyramid(image, [0.5, 0.75, 1.0, 1.25, 1.5], "cv2_bilinear")]
    assert sizes == [(int(s * H), int(s * W)) for s in (0.5, 0.75, 1.0, 1.25, 1.5)]  # int(), not round()
    assert sizes[1] == (30, 42)
