"""SPML's random-walk pseudo labels (``wsss.pseudo_label refine=random_walk``) against the reference's
``pyscripts/inference/pseudo_softmaxrw_crf.py`` (twke18/SPML@0800afd).

Fixture ``tests/fixtures/spml/random_walk/random_walk_voc12.npz`` (README there): the unchanged script on seeded
weights in the release layout and two small images (81x113 with tags {0,3,7}, 67x90 with tags {5,12}), crop 96."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_spml_parity import FIX, official_file, voc_model
from wsss.data.formats import read_label_png
from wsss.inference.data import normalize
from wsss.methods.spml_random_walk import RandomWalkSettings, crf_image, random_walk_scores
from wsss.postprocess.crf import dense_crf, load_preset
from wsss.random_walk_labelling import image_tags

REF = np.load(FIX / "random_walk" / "random_walk_voc12.npz")
NAMES = ("a", "b")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def release_zero_bias(tmp_path_factory) -> Path:
    """The fixture's release file: the seeded weights with ``semantic_classifier.4.bias`` = 0 (README)."""
    path = official_file(tmp_path_factory.mktemp("spml_rw_release"), "voc12")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    obj["prediction_model"]["semantic_classifier.4.bias"].zero_()
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def model(release_zero_bias):
    m = voc_model(test_crop_size=int(REF["crop"]), test_stride=int(REF["crop"]))
    m.load_official(str(release_zero_bias))
    return m.eval()


def tags_of(name: str, tmp_path: Path) -> np.ndarray:
    """The reference's rule (classes present in the label map, < 21) through ``refine.tags_dir``."""
    Image.fromarray(REF[f"{name}_label_map"]).save(tmp_path / f"{name}.png")
    return image_tags({"id": name, "label": None}, 21, tmp_path)


@pytest.mark.parametrize("name", NAMES)
def test_walked_maps_and_labels_match_the_reference(model, name, tmp_path):
    image = normalize(REF[f"{name}_image"])
    tags = tags_of(name, tmp_path)
    assert sorted(np.flatnonzero(tags)) == ([0, 3, 7] if name == "a" else [5, 12])
    walked = random_walk_scores(model, image, tags, RandomWalkSettings())
    ref = REF[f"{name}_walked"]
    assert walked.shape == ref.shape
    assert np.abs(walked - ref).max() < 1e-4
    assert not walked[~tags].any()  # untagged classes never win
    top2 = np.sort(ref, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 1e-5  # the walk's argmax wherever the reference's is not a float tie
    np.testing.assert_array_equal(walked.argmax(0)[clear], REF[f"{name}_walk_argmax"][clear])
    label = dense_crf(crf_image(image), walked, load_preset("spml")).argmax(0)
    np.testing.assert_array_equal(label, REF[f"{name}_pseudo_label"])
    assert len(np.unique(label)) >= 2


def test_crf_image_truncates_like_the_reference():
    """The CRF sees the de-normalised float image cast to uint8 (truncation): some pixels come back one lower."""
    u8 = REF["a_image"]
    back = crf_image(normalize(u8))
    assert np.abs(back.astype(int) - u8).max() <= 1 and (back <= u8).all()


@pytest.mark.slow
def test_cli_on_the_authors_stage1_layout(tmp_path, release_zero_bias):
    """``python -m wsss.pseudo_label method=spml ckpt=<authors' stage1 folder> refine=random_walk crf=spml``
    writes the reference's label maps (the release's recipe composed automatically, tags from the label maps)."""
    root = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "ImageSets/Segmentation", "tags"):
        (root / sub).mkdir(parents=True)
    for name in NAMES:
        # the pixels the reference saw, lossless (PNG bytes under the .jpg name; PIL decodes by content)
        Image.fromarray(REF[f"{name}_image"]).save(root / "JPEGImages" / f"{name}.jpg", format="PNG")
        Image.fromarray(REF[f"{name}_label_map"]).save(root / "tags" / f"{name}.png")
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("a\nb\n")
    stage1 = tmp_path / "snapshot" / "stage1"
    stage1.mkdir(parents=True)
    (stage1 / "model-29999.pth").symlink_to(release_zero_bias)  # the authors' stage-1 snapshot layout
    crop = int(REF["crop"])
    proc = subprocess.run(
        [sys.executable, "-m", "wsss.pseudo_label", "method=spml", f"ckpt={stage1}", "dataset=voc",
         f"dataset.root={root}", "split=train_aug", f"out_dir={tmp_path / 'PL'}", "refine=random_walk", "crf=spml",
         f"refine.tags_dir={root / 'tags'}", f"method.test_crop_size={crop}", f"method.test_stride={crop}",
         "device=cpu", "progress=false", "workers=0", "threads=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in NAMES:
        np.testing.assert_array_equal(read_label_png(tmp_path / "PL" / f"{name}.png"), REF[f"{name}_pseudo_label"])


def test_settings_are_the_config_and_refuse_unknown_keys():
    from omegaconf import OmegaConf

    from conftest import CONF_DIR

    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "refine" / "random_walk.yaml"))
    assert RandomWalkSettings.from_config(cfg) == RandomWalkSettings()  # the YAML holds the reference's values
    with pytest.raises(ValueError, match="unknown keys \\['steps'\\]"):
        RandomWalkSettings.from_config({"steps": 6})


def test_refine_needs_a_model(tmp_path, synthetic_root):
    from omegaconf import OmegaConf

    from wsss.labelling import run

    cfg = OmegaConf.create({"scores_dir": str(tmp_path), "split": "val", "refine": {"name": "random_walk"},
                            "dataset": {"root": str(synthetic_root), "num_classes": 6}})
    with pytest.raises(ValueError, match="refine=random_walk needs the model: pass ckpt="):
        run(cfg)
