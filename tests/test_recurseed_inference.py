"""RecurSeed + EdgePredictMix single-stage release: import (374 tensors) and parity with the unchanged reference
``infer_rsepm.py --conf_th 0.34`` + ``convert_seed_to_pseudo_masks.py`` (tests/fixtures/recurseed/README.md)."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsss.checkpoints import recurseed as release
from wsss.data.formats import read_image
from wsss.inference.data import image_pyramid
from wsss.methods.recurseed import RecurSeedModule
from wsss.postprocess.crf import crf_image, load_preset, refine

FIX = Path(__file__).parent / "fixtures" / "recurseed"
IMAGES = ("2007_000033", "2007_000042")
SCALES = [1.0, 0.5, 1.5, 2.0]


def _seeded():
    spec = importlib.util.spec_from_file_location("recurseed_seeded_state", FIX / "seeded_state.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.seeded_state_dict


def official_state(layout: str = "rsepm", seed: int = 0):
    spec = json.loads((FIX / f"keys_{layout}.json").read_text())
    return _seeded()([(s["name"], s["shape"], s["dtype"]) for s in spec], seed)


def rsepm_model() -> RecurSeedModule:
    """The network of experiment=recurseed_voc (ResNet-50, RS+EPM dilations, output stride 16, 21 classes)."""
    return RecurSeedModule(backbone={"name": "resnet50", "output_stride": 16, "dilation_style": "recurseed"},
                           num_classes=21, bg={"rule": "power", "alpha": 2.0}).eval()


@pytest.fixture(scope="module")
def imported():
    model = rsepm_model()
    release.load_state(model, official_state(), release.RSEPM, "seeded release")
    return model


def test_key_fixture_is_the_374_tensor_layout_and_loads_strictly(imported):
    state = official_state()
    assert len(state) == 374 and release.layout_of(state) == release.RSEPM
    mapped = release.convert(state)
    own = imported.state_dict()
    assert set(mapped) == {k for k in own if k.startswith(("backbone.", "head.", "classifier."))}
    for key, value in mapped.items():
        assert torch.equal(own[key], value.to(own[key].dtype)), key


def test_a_file_of_another_method_is_refused_naming_it(imported):
    from wsss.checkpoints.rtc import SIGNATURE

    rtc_like = {k: torch.zeros(1) for k in SIGNATURE}
    with pytest.raises(ValueError, match="method=rtc"):
        release.load_state(imported, rtc_like, release.RSEPM, "rtc.pth")
    seg = {s["name"]: torch.zeros(1) for s in json.loads((FIX / "keys_deeplabv2.json").read_text())}
    with pytest.raises(ValueError, match="experiment=recurseed_voc_deeplabv2 method=deeplab"):
        release.load_state(imported, seg, release.RSEPM, "deeplabv2.pth")
    broken = dict(official_state())
    broken["classifier.weight"] = torch.zeros(19, 2048, 1, 1)
    with pytest.raises(ValueError, match="shape mismatch"):  # checked before any tensor is copied
        release.load_state(imported, broken, release.RSEPM, "last.pth")


def test_the_reference_rules_matter(imported):
    """round() sizes or a bilinear merge would change the seeds (so the CLI parity test below can fail)."""
    image = read_image(str(FIX / f"{IMAGES[0]}.png"))
    scales = [1.0, 0.5]   # int(0.5 * 47) = 23, round -> 24

    def seeds(resize: str, interp: str) -> np.ndarray:
        imported.seg_interpolation = interp
        inputs = [x[None] for x in image_pyramid(image, scales, resize)]
        return imported.multiscale_raw_scores(inputs, image.shape[:2], flip=False)[0].numpy()

    try:
        reference_rules = seeds("bilinear_int", "nearest")
        assert np.abs(seeds("bilinear", "nearest") - reference_rules).max() > 1e-3
        assert np.abs(seeds("bilinear_int", "bilinear") - reference_rules).max() > 1e-3
    finally:
        imported.seg_interpolation = "nearest"


@pytest.mark.parametrize("name", IMAGES)
def test_crf_preset_recurseed_reproduces_the_reference_pseudo_labels(name):
    ref = np.load(FIX / "reference_outputs.npz")
    keys = [int(k) - 1 for k in ref[f"rsepm_{name}_keys"][1:]]
    image = read_image(str(FIX / f"{name}.png"))
    preset = load_preset("recurseed")
    label = refine(image, ref[f"rsepm_{name}_seed"], keys, preset)
    assert np.array_equal(label, np.asarray(Image.open(FIX / f"rsepm_{name}_crf.png")))
    truncated = crf_image(image, preset)
    assert (truncated <= image).all() and (truncated != image).any()  # the round trip truncates
    assert np.array_equal(refine(image, np.zeros((0,) + image.shape[:2], np.float32), [], preset),
                          np.zeros(image.shape[:2], np.uint8))  # no kept class: an all-zero mask


def write_voc(root: Path) -> None:
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for name in IMAGES:
        shutil.copy(FIX / f"{name}.png", root / "JPEGImages" / f"{name}.jpg")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{n}\n" for n in IMAGES))


def run_cli(module: str, *args: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=Path(__file__).parents[1],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_infer_and_pseudo_label_clis_reproduce_the_reference(tmp_path):
    """`wsss.infer method=recurseed ckpt=last.pth` then `wsss.pseudo_label ... crf=recurseed` on a VOC-layout
    folder: the score dicts hold exactly the kept classes with the reference seeds, the PNGs are the reference's,
    and an image whose scores keep no class gets an all-zero mask."""
    ckpt = tmp_path / "last.pth"
    torch.save(official_state(), ckpt)
    root = tmp_path / "VOC2012"
    write_voc(root)
    out = tmp_path / "out"
    run_cli("wsss.infer", "method=recurseed", f"ckpt={ckpt}", f"dataset.root={root}", "split=val", f"out_dir={out}",
            f"hydra.run.dir={tmp_path / 'run'}", "workers=1", "loader_workers=0", "device=cpu", tmp_path=tmp_path)
    ref = np.load(FIX / "reference_outputs.npz")
    for name in IMAGES:
        scores = np.load(out / "scores" / f"{name}.npy", allow_pickle=True).item()
        assert [k + 1 for k in sorted(scores)] == ref[f"rsepm_{name}_keys"][1:].tolist()
        assert 0 < len(scores) < 20  # the classifier keeps some classes and drops others
        assert np.abs(np.stack([scores[k] for k in sorted(scores)]) - ref[f"rsepm_{name}_seed"]).max() < 1e-4
    np.save(out / "scores" / f"{IMAGES[1]}.npy", {}, allow_pickle=True)   # no kept class
    labels = tmp_path / "pl"
    run_cli("wsss.pseudo_label", f"scores_dir={out / 'scores'}", f"out_dir={labels}", "dataset=voc",
            f"dataset.root={root}", "split=val", "crf=recurseed", f"hydra.run.dir={tmp_path / 'run2'}",
            tmp_path=tmp_path)
    first = np.asarray(Image.open(labels / f"{IMAGES[0]}.png"))
    assert (first == np.asarray(Image.open(FIX / f"rsepm_{IMAGES[0]}_crf.png"))).mean() >= 0.999
    assert not np.asarray(Image.open(labels / f"{IMAGES[1]}.png")).any()
