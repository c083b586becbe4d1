"""Method contract v2: declared outputs, the typed background rule, and the method registry the entry points
read (importers, release detection, recipes, tools) without naming a method."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from wsss.inference.loading import guess_release, load_for_inference, official_experiment
from wsss.methods.base import WSSSModule
from wsss.methods.cam_ops import max_normalize
from wsss.methods.cam import CAMModule
from wsss.methods.contract import OutputSpec
from wsss.methods.registry import METHODS, Release, method_classes, recognise_release, register_method
from wsss.methods.rtc import RTCModule
from wsss.paths import config_dir
from wsss.postprocess.background import Background, LearnedBackground, background_rule

CONF = Path(config_dir())


def test_every_method_config_names_a_registered_class_with_declared_outputs():
    classes = method_classes()
    assert {"cam", "rtc", "spml", "deeplab"} <= set(classes)
    for yaml_file in sorted((CONF / "method").glob("*.yaml")):
        node = yaml.safe_load(yaml_file.read_text())
        target = (node["method"] if "_target_" not in node else node)["_target_"]  # `@package _global_`: EPS, HSC
        cls = classes[yaml_file.stem]
        assert f"{cls.__module__}.{cls.__qualname__}" == target
        assert cls.method_name == yaml_file.stem
        names = [o.name for o in cls.outputs]
        assert len(set(names)) == len(names) and cls.seed_output in names


def test_registered_recipes_are_the_published_recipes():
    recipes = {p.stem for p in (CONF / "experiment").glob("*.yaml") if not p.stem.endswith("_pipeline")}
    owned = [r for cls in method_classes().values() for r in cls.recipes]
    assert sorted(owned) == sorted(recipes)  # each published recipe belongs to exactly one method
    for name in ("rtc", "deeplab"):  # their release needs one recipe whatever the file
        cls = method_classes()[name]
        assert cls.release.experiment(Path("release.pth")) in cls.recipes


def test_output_layouts_give_background_first_scores():
    torch.manual_seed(0)
    cam = CAMModule(backbone={"name": "tiny"}, num_classes=4, bg={"rule": "power", "alpha": 2.0}).eval()
    raw = cam.raw_scores(torch.rand(1, 3, 32, 32))
    assert raw.shape[1] == 3
    full = cam.finalize_scores(raw)
    fg = cam.foreground_scores(raw)
    assert full.shape[1] == 4 and torch.equal(full[:, 1:], fg)
    assert torch.allclose(full[:, :1], (1 - fg.max(1, keepdim=True).values).clamp_min(0) ** 2)
    with pytest.raises(ValueError, match="no output 'seg'"):
        cam.multiscale_raw_scores([torch.rand(1, 3, 32, 32)], (32, 32), output="seg")
    with pytest.raises(ValueError, match="has no background channel"):
        CAMModule(backbone={"name": "tiny"}, num_classes=4, bg={"rule": "learned"})


def test_rtc_exports_its_cam_branch_as_a_second_output():
    torch.manual_seed(0)
    model = RTCModule(backbone={"name": "tiny"}, num_classes=4, head={"proj_dim": 8, "mid_dim": 4, "deep_dim": 8,
                                                                      "aspp_dim": 8, "seg_dim": 8, "low_dim": 4},
                      bg={"rule": "threshold", "threshold": 0.17}).eval()
    x = [torch.rand(1, 3, 32, 32)]
    seg = model.multiscale_raw_scores(x, (32, 32), flip=True)
    cam = model.multiscale_raw_scores(x, (32, 32), flip=True, output="cam")
    assert seg.shape == cam.shape == (1, 3, 32, 32)
    assert torch.equal(model.foreground_scores(seg), seg)  # the seed output is stored as it is
    assert torch.equal(model.foreground_scores(cam, "cam"), max_normalize(cam))
    assert torch.equal(model.finalize_scores(cam, "cam")[:, 0], torch.full((1, 32, 32), 0.17))


def test_background_rule_is_one_typed_object():
    assert background_rule({"rule": "threshold", "threshold": 0.3, "alpha": 1.0, "other": 1}) == Background("threshold", 0.3)
    assert background_rule({"rule": "learned"}) == LearnedBackground()
    assert background_rule({"rule": "learned"}).learned and not Background().learned
    with pytest.raises(ValueError, match="unknown background rule"):
        background_rule({"rule": "otsu"})
    fg = torch.tensor([[[[0.2, 0.9]]], [[[0.5, 0.1]]]]).permute(1, 0, 2, 3)  # 1 x 2 x 1 x 2
    assert torch.equal(Background("threshold", 0.4).add(fg)[:, 0], torch.full((1, 1, 2), 0.4))


@pytest.fixture
def toy_method():
    """A method added the way docs/adding_a_method.md says: one class, registered, with its own release."""

    def detect(obj) -> bool:
        return isinstance(obj, dict) and "toy_classifier.weight" in obj

    def load(model, path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.classifier.weight.data.copy_(state["toy_classifier.weight"])

    @register_method
    class ToyModule(CAMModule):
        method_name = "toy_contract_test"
        release = Release(load=load, detect=detect, experiment=lambda path: "toy_recipe", title="the toy release")
        tools = {"toy_tool": "remember"}

        def remember(self, value) -> None:
            self.remembered = value

    globals()["ToyModule"] = ToyModule  # importable for Hydra's _target_
    yield ToyModule
    METHODS._table.pop(ToyModule.method_name)
    del globals()["ToyModule"]


def test_a_new_method_is_found_by_the_entry_points_without_editing_them(tmp_path, toy_method):
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    weight = torch.randn(3, 96, 1, 1)  # the tiny backbone has 96 channels
    release = tmp_path / "toy.pth"
    torch.save({"toy_classifier.weight": weight}, release)
    assert recognise_release(release) == "toy_contract_test"
    assert guess_release(release) == "; it looks like the toy release: add method=toy_contract_test"
    assert official_experiment("toy_contract_test", release) == "toy_recipe"
    cfg = OmegaConf.create({"method": {"_target_": f"{__name__}.ToyModule", "backbone": {"name": "tiny"},
                                       "num_classes": 4}})
    with pytest.raises(ValueError, match="add method=toy_contract_test"):
        load_for_inference(cfg, release, None)
    model = load_for_inference(cfg, release, "toy_contract_test")
    assert torch.equal(model.classifier.weight, weight)
    model.use_tool("toy_tool", "memory.npz")
    assert model.remembered == "memory.npz"
    with pytest.raises(ValueError, match="method 'cam' has none"):
        CAMModule(backbone={"name": "tiny"}, num_classes=4).use_tool("toy_tool", "x")


def test_base_declares_the_seed_contract():
    assert WSSSModule.seed_output in [o.name for o in WSSSModule.outputs]
    with pytest.raises(ValueError, match="normalize"):
        OutputSpec("x", has_background=False, normalize="softmax")
