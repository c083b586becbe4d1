"""SPML: official key layout imports strictly; seeded-weight parity with the reference (twke18/SPML@0800afd).

Fixtures: tests/fixtures/spml/ (README says how they were made)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss.checkpoints.spml import find_checkpoint_file, read_official
from wsss.methods.spml import SPMLModule

FIX = Path(__file__).parent / "fixtures" / "spml"


def _load_seeded():
    spec = importlib.util.spec_from_file_location("spml_seeded_state", FIX / "seeded_state.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.seeded


seeded = _load_seeded()  # the fixture weight rule (README), shared with the fixture scripts


def official_file(tmp_path: Path, name: str) -> Path:
    keys = json.loads((FIX / f"keys_{name}.json").read_text())
    obj = {}
    for part, table in keys.items():
        obj[part] = {}
        for k, shape in table.items():
            dtype = torch.long if k.endswith("num_batches_tracked") else torch.float32
            obj[part][k] = torch.zeros(shape) if "smooth_kernel" in k else seeded(k, tuple(shape), dtype)
    out = tmp_path / "release" / "softmax_classifier_stage1"
    out.mkdir(parents=True)
    torch.save(obj, out / "model-3999.pth")
    return out / "model-3999.pth"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """An official-layout VOC12 release file with the seeded weights (module-scoped: ResNet-101 is large)."""
    return official_file(tmp_path_factory.mktemp("spml_release"), "voc12")


def voc_model(**kw) -> SPMLModule:
    return SPMLModule(backbone={"name": "resnet101_deepstem", "output_stride": 8}, num_classes=21, head="aspp",
                      embedding_dim=64, **kw)


def test_official_keys_load_strictly(tmp_path):
    path = official_file(tmp_path, "voc12")
    assert find_checkpoint_file(tmp_path / "release") == path  # a release directory works too
    state, _ = read_official(tmp_path / "release")
    keys = json.loads((FIX / "keys_voc12.json").read_text())
    assert len(keys["embedding_model"]) == 644 and len(keys["prediction_model"]) == 8
    model = voc_model()
    model.load_official(str(path))
    own = {f"{p}.{k}" for p in ("backbone", "head", "classifier") for k in getattr(model, p).state_dict()}
    assert own == set(state)
    # a wrong head is refused with a message naming the fix
    with pytest.raises(ValueError, match="embedding_dim"):
        SPMLModule(backbone={"name": "resnet101_deepstem", "output_stride": 8}, num_classes=21,
                   embedding_dim=32).load_official(str(path))


def test_wrong_file_is_named(tmp_path):
    torch.save({"conv1a.weight": torch.zeros(1)}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="ResNet-38"):
        read_official(tmp_path / "x.pth")


def test_densepose_keys_load_strictly(tmp_path):
    path = official_file(tmp_path, "densepose")
    model = SPMLModule(backbone={"name": "resnet101_deepstem", "output_stride": 8}, num_classes=15, head="pspp",
                       embedding_dim=32, local_features="location_color", loc_embedding_scale=0.1)
    model.load_official(str(path))
    ref = np.load(FIX / "parity_densepose.npz")
    x = torch.from_numpy(_image(np.load(FIX / "parity_voc12.npz")["image"]))
    model.eval()
    with torch.no_grad():
        emb = model.embed(x)[0].numpy()
    np.testing.assert_allclose(emb, ref["embedding"], atol=1e-4 * max(1.0, np.abs(ref["embedding"]).max()))


def _image(u8: np.ndarray) -> np.ndarray:
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = ((u8.astype(np.float32) / 255 - mean) / std).astype(np.float32)
    return x.transpose(2, 0, 1)[None].copy()


def test_voc_parity_embeddings_predictions_losses(tmp_path):
    ref = np.load(FIX / "parity_voc12.npz")
    model = voc_model(memory_bank_size=0)
    model.load_official(str(official_file(tmp_path, "voc12")))
    model.eval()
    x = torch.from_numpy(_image(ref["image"]))
    with torch.no_grad():
        emb = model.embed(x)
        unit = emb / emb.norm(dim=1, keepdim=True)
        ref_emb = torch.from_numpy(ref["embedding"])[None]
        ref_unit = ref_emb / ref_emb.norm(dim=1, keepdim=True)
        assert (unit - ref_unit).abs().max() < 1e-4
        np.testing.assert_allclose(model.logits(emb)[0].numpy(), ref["logits_emb"], atol=1e-3)
        full = model.logits(model.embed(x, size=x.shape[-2:])).argmax(1)[0].numpy()
    np.testing.assert_array_equal(full, ref["labels_full"])
    np.testing.assert_array_equal(model.predict_reference(ref["image"]), ref["labels_ref512"])

    # one training step's segments and losses on a batch of 2 (image 2 = flipped, other labels)
    weak = torch.from_numpy(ref["weak"].astype(np.int64))
    segments = torch.from_numpy(ref["segments"].astype(np.int64))
    segments = torch.where(weak == 255, torch.full_like(segments, 255), segments)  # ignored strip = outside
    cls = torch.zeros(2, 20)
    cls[0, [2, 14]] = 1
    cls[1, 6] = 1
    batch = {"image": torch.cat([x, torch.flip(x, dims=[3])]), "weak": weak, "segments": segments, "cls": cls}
    captured = {}
    import wsss.methods.spml as spml_mod

    orig = spml_mod.build_segments

    def spy(*a, **k):
        captured["segs"] = orig(*a, **k)
        return captured["segs"]

    spml_mod.build_segments = spy
    try:
        with torch.no_grad():
            losses = model.training_losses(batch)
    finally:
        spml_mod.build_segments = orig
    segs = captured["segs"]
    assert segs.prototype.shape[0] == int(ref["num_segments"])
    np.testing.assert_array_equal(segs.pixel_segment.numpy(), ref["cluster_index"])
    ann, occ, sim = ref["losses"]
    assert losses["sem_ann"].item() == pytest.approx(ann, rel=1e-4)
    assert losses["sem_occ"].item() == pytest.approx(occ, rel=1e-4)  # reference values are already weighted
    assert losses["img_sim"].item() == pytest.approx(sim, rel=1e-4)


def test_release_picks_its_recipe(tmp_path):
    from wsss.checkpoints.spml import official_experiment

    assert official_experiment(official_file(tmp_path / "v", "voc12")) == "spml_voc_scribble"
    assert official_experiment(official_file(tmp_path / "d", "densepose")) == "spml_densepose_point"


def test_infer_cli_takes_the_release_directory(tmp_path):
    """`python -m wsss.infer method=spml ckpt=DIR ...`: the release loads as it is and predicts like the model."""
    import subprocess
    import sys

    from PIL import Image

    official_file(tmp_path, "voc12")
    root = tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / "JPEGImages" / "2007_000032.jpg", quality=95)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000032\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "wsss.infer", "method=spml", f"ckpt={tmp_path / 'release'}",
                           f"dataset.root={root}", "split=val", f"out_dir={out}", "scales=[1.0]", "flip=false",
                           "crf=none", "device=cpu", "loader_workers=0", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = voc_model()
    model.load_official(str(tmp_path / "release"))
    model.eval()
    read = np.asarray(Image.open(root / "JPEGImages" / "2007_000032.jpg").convert("RGB"))
    x = torch.from_numpy(((read / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]))
                         .astype(np.float32).transpose(2, 0, 1))[None]
    with torch.no_grad():
        # the reference pads every image to the 512 test crop before the forward
        expected = model.multiscale_raw_scores([x], x.shape[-2:], False)[0].argmax(0).numpy()
    pred = np.asarray(Image.open(out / "pred" / "2007_000032.png"))
    assert (pred == expected).mean() > 0.999
    scores = np.load(out / "scores" / "2007_000032.npy", allow_pickle=True).item()
    assert sorted(scores) == [0, 14]  # 2007_000032: aeroplane, person (the packaged VOC labels)
