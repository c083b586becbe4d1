"""Every recipe and every group option runs: composed, built (datamodule, method, trainer) and fit for one
step on generated data of its layout, with size overrides only (lightning-hydra-template's test_configs).

A new ``conf/experiment/*.yaml`` or group option is picked up without editing this file. The data are made
by ``tests/vocgen.py`` (not the embedded synthetic generator) and, for DensePose, its layout writer.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from conftest import CONF_DIR
from vocgen import write_voc_folder
from wsss.engine import build_datamodule, build_method, build_trainer

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml") if not p.stem.endswith("_pipeline"))
PIPELINES = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*_pipeline.yaml"))
GROUPS = {g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml")) for g in ("method", "dataset", "supervision",
                                                                             "backbone")}
HEAVY_BACKBONES = {"resnet38d", "resnet101", "resnet101_deepstem", "resnet50"}
SIZES = ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32", "++trainer.strategy=auto",
         "++trainer.sync_batchnorm=false", "dataset.batch_size=2", "dataset.val_batch_size=1", "dataset.num_workers=0",
         "++dataset.crop_size=64", "logger=none"]


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    return write_voc_folder(tmp_path_factory.mktemp("voc") / "VOC2012", num_train=4, num_val=2,
                            size_range=(72, 100), weak=True)


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    """What scripts/prepare_coco.py writes from a generated COCO 2014 (tests/cocogen.py)."""
    from cocogen import write_tiny_coco
    from wsss.prepare.coco import prepare

    base = tmp_path_factory.mktemp("coco")
    write_tiny_coco(base / "COCO2014", size=(72, 80))
    prepare(base / "COCO2014", base / "coco_wsss", workers=1, progress=False)
    return base / "coco_wsss"


@pytest.fixture(scope="module")
def densepose_root(tmp_path_factory) -> Path:
    from wsss.data.densepose import write_synthetic_densepose

    return write_synthetic_densepose(tmp_path_factory.mktemp("dp") / "MSCOCO", num_train=4, num_val=2,
                                     image_size=(72, 80))


def compose_run(overrides, root: Path, out: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        choices = dict(cfg.hydra.runtime.choices)
        del cfg["hydra"]
        cfg.paths.output_dir = str(out)
        cfg.dataset.root = str(root)
        if "synthetic_home" in cfg.dataset:
            cfg.dataset.synthetic_home = None
    return cfg, choices


def fast_dev_run(cfg) -> None:
    datamodule = build_datamodule(cfg)
    model = build_method(cfg)
    trainer = build_trainer(cfg, fast_dev_run=True, enable_progress_bar=False)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 1, trainer.global_step


def stage1_checkpoint(cfg, path: Path) -> Path:
    """A wsss stage-1 checkpoint of ``cfg``'s SPML architecture (seeded, untrained) for a stage-2 recipe's
    ``method.weights``: what ``python -m wsss.train experiment=spml_voc_X`` leaves in checkpoints/last.ckpt."""
    import pytorch_lightning as pl
    import torch

    stage1 = cfg.copy()
    with open_dict(stage1):
        stage1.method.stage = 1
        stage1.method.weights = None
    model = build_method(stage1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": pl.__version__,
                "wsss": {"method": "spml", "target": "wsss.methods.spml.SPMLModule"}}, path)
    return path


def _second_stage_inputs(cfg, voc_root: Path, tmp_path: Path) -> None:
    """The GT stands in for the pseudo labels a second stage needs; SPML's stage 2 also gets a stage-1 checkpoint."""
    with open_dict(cfg):
        if cfg.method._target_.endswith("DeepLabModule") or cfg.method.get("stage") == 2:
            coco = cfg.dataset._target_.endswith("COCODataModule")
            cfg.dataset.pseudo_label_dir = str(Path(cfg.dataset.root) / "SegmentationClass" / "train2014") if coco \
                else str(voc_root / "SegmentationClassAug")
        if cfg.method.get("stage") == 2:
            weights = Path(str(cfg.method.weights)) if cfg.method.get("weights") not in (None, "???") else \
                tmp_path / "stage1.ckpt"
            cfg.method.weights = str(stage1_checkpoint(cfg, weights))


def _image_folder(voc_root: Path) -> Path:
    """conf/dataset/image_folder.yaml's folder names over the VOC fixture's files."""
    root = voc_root.parent / "image_folder"
    if not root.exists():
        root.mkdir()
        for name, src in (("images", "JPEGImages"), ("masks", "SegmentationClass"), ("lists", "ImageSets/Segmentation")):
            (root / name).symlink_to(voc_root / src)
    return root


def _root_for(choices, voc_root, densepose_root, synthetic_root, request=None):
    if choices["dataset"] == "image_folder":
        return _image_folder(voc_root)
    if choices["dataset"] == "coco":
        return request.getfixturevalue("coco_root")
    return {"voc": voc_root, "densepose": densepose_root}.get(choices["dataset"], synthetic_root)


def _mark(name: str, heavy: bool):
    return pytest.param(name, marks=pytest.mark.slow) if heavy else name


@pytest.mark.parametrize("experiment", [_mark(e, True) for e in EXPERIMENTS])
def test_experiment_trains_one_step(experiment, tmp_path, voc_root, densepose_root, synthetic_root, request):
    cfg, choices = compose_run([f"experiment={experiment}"] + SIZES, voc_root, tmp_path)
    assert choices["experiment"] == experiment
    with open_dict(cfg):
        cfg.dataset.root = str(_root_for(choices, voc_root, densepose_root, synthetic_root, request))
        if choices["dataset"] == "densepose":
            cfg.dataset.train_transforms[0]["scale_limit"] = [-0.1, 0.1]
    _second_stage_inputs(cfg, voc_root, tmp_path)  # a second stage: GT as pseudo labels, a stage-1 checkpoint
    fast_dev_run(cfg)


@pytest.mark.parametrize("group,option", [
    pytest.param(g, o, id=f"{g}={o}", marks=[pytest.mark.slow] if g == "backbone" and o in HEAVY_BACKBONES else [])
    for g, opts in GROUPS.items() for o in opts])
def test_group_option_trains_one_step(group, option, tmp_path, voc_root, densepose_root, synthetic_root, request):
    """Each option with the defaults for everything else; dataset=voc for methods, supervisions and backbones,
    so that what runs is what `dataset=voc dataset.root=...` runs, not the synthetic preset."""
    dataset = option if group == "dataset" else "voc"
    overrides = [f"{group}={option}"] if group == "dataset" else [f"dataset={dataset}", f"{group}={option}"]
    if group == "supervision":  # the method that reads it: SPML every pixel supervision, EPS saliency
        overrides.append("method=eps" if option == "saliency" else "method=spml")
    if option == "deeplab":  # the second stage trains on label PNGs: the GT stands in for pseudo labels
        overrides.append(f"dataset.pseudo_label_dir={voc_root / 'SegmentationClassAug'}")
    cfg, choices = compose_run(overrides + SIZES, voc_root, tmp_path)
    with open_dict(cfg):
        cfg.dataset.root = str(_root_for(choices, voc_root, densepose_root, synthetic_root, request))
    fast_dev_run(cfg)


def test_published_names_are_published(tmp_path, voc_root):
    """`method=rtc dataset=voc` is RTC as published; the CPU sizes apply only on the synthetic set, and say so."""
    rtc, choices = compose_run(["method=rtc", "dataset=voc"], voc_root, tmp_path)
    assert choices["preset"] == "voc_rtc"
    assert rtc.method.head.proj_dim == 256 and rtc.method.seg_start_epoch == 7 and rtc.method.view2_size == 128
    assert rtc.method.optim.lr == 0.01 and rtc.method.optim.momentum == 5.0e-4
    small, choices = compose_run(["method=rtc"], voc_root, tmp_path)
    assert choices["preset"] == "synthetic_rtc" and small.method.head.proj_dim == 64
    spml, _ = compose_run(["method=spml", "dataset=voc"], voc_root, tmp_path)
    assert spml.method.kmeans.num_clusters == [6, 6] and spml.method.upsample == 2 and spml.method.dropout == 0.75
    assert spml.method.memory_bank_size == 2 and spml.method.scheduler.warmup_steps == 100
    for name in ("rtc", "spml"):  # every preset names an existing dataset and method
        assert (CONF_DIR / "method" / f"{name}.yaml").is_file()
    for preset in (CONF_DIR / "preset").glob("*.yaml"):
        dataset, _, method = preset.stem.partition("_")
        assert dataset in GROUPS["dataset"] and method in GROUPS["method"], preset.name


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_pipeline_recipe_stages_compose_and_train_one_step(pipeline, tmp_path, voc_root):
    """Every stage of a *_pipeline recipe is a valid command of its tool: the two trainings train a step on a
    VOC-layout folder; infer, evaluate and pseudo_label compose with the stage's overrides."""
    from wsss.stages.commands import COMMANDS

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        pcfg = compose(config_name="pipeline", overrides=[f"experiment={pipeline}", f"dataset.root={voc_root}"])
    run_dir = tmp_path / "run"
    (run_dir / "scores").mkdir(parents=True)
    (run_dir / "scores" / "settings.json").write_text(json.dumps({"dataset_root": str(voc_root)}))
    (run_dir / "threshold").mkdir()
    (run_dir / "threshold" / "metrics.json").write_text(json.dumps({"calibrated": {"threshold": 0.3}}))
    for stage, command in COMMANDS.items():
        argv = command(pcfg, run_dir)
        tool = argv[argv.index("-m") + 1].split(".")[1]
        overrides = [a for a in argv[argv.index("-m") + 2:] if not a.startswith("hydra.")]
        if tool == "train":
            cfg, _ = compose_run(overrides + SIZES, voc_root, tmp_path / stage)
            _second_stage_inputs(cfg, voc_root, tmp_path / stage)
            fast_dev_run(cfg)
        else:
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                compose(config_name=tool, overrides=overrides)


def test_train_refuses_a_pipeline_recipe(tmp_path, voc_root):
    from wsss.engine import fit

    for pipeline in PIPELINES:
        cfg, _ = compose_run([f"experiment={pipeline}"] + SIZES, voc_root, tmp_path)
        with pytest.raises(ValueError, match="python -m wsss.pipeline experiment=NAME_pipeline"):
            fit(cfg)
