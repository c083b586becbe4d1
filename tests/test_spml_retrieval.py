"""SPML's segment-retrieval inference against the reference scripts (twke18/SPML@0800afd).

Fixture ``tests/fixtures/spml/retrieval_voc12.npz`` (README "Retrieval fixture"): the unchanged
``pyscripts/inference/prototype.py`` on two small labelled images (memory: prototypes + majority labels) and
``pyscripts/inference/inference.py`` on one test image (20-NN retrieval against that memory), seeded weights,
image size 64, crop 48 / stride 32 (windows overlap), 5x5 k-means grid, 10 iterations."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from conftest import CONF_DIR
from test_infer import infer_cfg
from test_spml_parity import FIX, release, voc_model  # noqa: F401 (release is a fixture)
from wsss import spml_memory
from wsss.infer import run as infer_run

REF = np.load(FIX / "retrieval_voc12.npz")
MEMORY_IDS = [str(i) for i in REF["memory_ids"]]


pytestmark = pytest.mark.usefixtures("one_thread")


def png_as_jpg(path: Path, image: np.ndarray) -> None:
    """The fixture's images are lossless PNG bytes under VOC's ``.jpg`` names (PIL decodes by content)."""
    Image.fromarray(image).save(path, format="PNG")


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("spml_retrieval") / "VOC"
    for sub in ("JPEGImages", "SegmentationClassAug", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    for image_id in MEMORY_IDS:
        png_as_jpg(root / "JPEGImages" / f"{image_id}.jpg", REF[f"{image_id}_image"])
        Image.fromarray(REF[f"{image_id}_label"], mode="L").save(root / "SegmentationClassAug" / f"{image_id}.png")
    png_as_jpg(root / "JPEGImages" / "test.jpg", REF["test_image"])
    # listed in reverse: the memory follows the reference's file order (sorted ID.npy), not the split's
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("\n".join(MEMORY_IDS[::-1]) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("test\n")
    return root


def model_for(release: Path, **kw):
    model = voc_model(test_crop_size=int(REF["crop"]), test_stride=int(REF["stride"]),
                      test_image_size=int(REF["image_size"]), retrieval_num_clusters=REF["num_clusters"].tolist(),
                      kmeans={"num_clusters": [6, 6], "iterations": int(REF["iterations"])}, **kw)
    model.load_official(str(release))
    return model.eval()


def memory_cfg(root: Path, out: Path):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="spml_memory", overrides=[
            "ckpt=unused", f"dataset.root={root}", "dataset.packaged_lists=false", "device=cpu", "progress=false",
            f"out={out}"])
    return cfg


def test_memory_matches_prototype_py(tmp_path, release, voc_root):
    """``wsss.spml_memory.run``: prototypes within 1e-4, majority labels (255 included) identical, same order."""
    model = model_for(release)
    out = spml_memory.run(memory_cfg(voc_root, tmp_path / "memory.npz"), model)
    mem = np.load(out)
    assert [str(i) for i in mem["ids"]] == MEMORY_IDS
    np.testing.assert_array_equal(mem["counts"], REF["memory_counts"])
    np.testing.assert_array_equal(mem["labels"], REF["memory_labels"])
    assert np.abs(mem["prototypes"] - REF["memory_prototypes"]).max() < 1e-4
    assert (REF["memory_labels"] == 255).any() and len(np.unique(REF["memory_labels"])) >= 5
    assert mem["num_clusters"].tolist() == REF["num_clusters"].tolist()
    assert int(mem["test_image_size"]) == int(REF["image_size"])


def reference_memory(path: Path) -> Path:
    np.savez(path, prototypes=REF["memory_prototypes"], labels=REF["memory_labels"],
             num_clusters=REF["num_clusters"], iterations=REF["iterations"], test_image_size=REF["image_size"],
             test_crop_size=np.array([REF["crop"]] * 2), test_stride=np.array([REF["stride"]] * 2))
    return path


def test_retrieval_matches_inference_py(tmp_path, release, voc_root):
    """``wsss.infer`` with ``method.retrieval_memory`` (the reference's memory) writes inference.py's label map."""
    memory = reference_memory(tmp_path / "ref_memory.npz")
    model = model_for(release, retrieval_memory=str(memory))
    cfg = infer_cfg(voc_root, tmp_path / "out", "crf=none", "scales=[1.0]", "flip=false", "classes=all")
    infer_run(cfg, model)
    pred = np.asarray(Image.open(tmp_path / "out" / "pred" / "test.png"))
    ref = REF["labels_retrieval"]
    assert len(np.unique(ref)) >= 4
    np.testing.assert_array_equal(pred, ref)
    # the top-level `retrieval_memory=` key reaches a model built without one (how a wsss checkpoint is loaded)
    cfg = infer_cfg(voc_root, tmp_path / "out2", "crf=none", "scales=[1.0]", "flip=false", "classes=all",
                    f"retrieval_memory={memory}")
    infer_run(cfg, model_for(release))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out2" / "pred" / "test.png")), ref)


def test_memory_settings_win_and_head_path_unchanged(tmp_path, release):
    """The memory's grid / sizes are used at test time; without a memory the softmax head predicts again."""
    memory = reference_memory(tmp_path / "ref_memory.npz")
    model = voc_model(test_crop_size=512, test_stride=512, test_image_size=0)
    model.load_official(str(release))
    model.eval()
    x = torch.zeros(1, 3, 20, 30)
    head = model.multiscale_raw_scores([x], (20, 30), flip=False)
    model.set_retrieval_memory(str(memory))
    assert model.test_crop_size == (48, 48) and model.test_image_size == 64 and model.retrieval_num_clusters == [5, 5]
    votes = model.multiscale_raw_scores([x], (20, 30), flip=False)
    assert votes.shape == head.shape and torch.allclose(votes.sum(1), torch.ones(1, 20, 30))
    with pytest.raises(ValueError, match=r"scales=\[1.0\] flip=false"):
        model.multiscale_raw_scores([x], (20, 30), flip=True)
    model.set_retrieval_memory(None)
    assert model.retrieval_memory is None
    assert torch.allclose(model.multiscale_raw_scores([x], (20, 30), flip=True).sum(1), torch.full((1, 20, 30), 2.0))


def test_memory_errors(tmp_path, release):
    model = voc_model()
    with pytest.raises(FileNotFoundError, match="wsss.spml_memory"):
        model.set_retrieval_memory(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "small.npz", prototypes=np.zeros((5, 64), np.float32), labels=np.zeros(5, np.int64))
    with pytest.raises(ValueError, match="retrieval_top_k"):
        model.set_retrieval_memory(str(tmp_path / "small.npz"))
    np.savez(tmp_path / "dim.npz", prototypes=np.zeros((30, 32), np.float32), labels=np.zeros(30, np.int64))
    with pytest.raises(ValueError, match="64 dimensions"):
        model.set_retrieval_memory(str(tmp_path / "dim.npz"))
