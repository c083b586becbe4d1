"""The README runs: every `python -m wsss.…` command in README.md's code blocks is executed as users type it,
with placeholder paths replaced by generated data, weights and checkpoints, and size overrides appended.

Commands run in README order in one working folder, so later commands read what earlier ones wrote, as a
user's session would. A new command in the README is picked up without editing this file; a placeholder this
file does not know fails the test by name.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from vocgen import write_voc_folder

pytestmark = pytest.mark.slow

TRAIN_SIZES = ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32", "++trainer.strategy=auto",
               "++trainer.sync_batchnorm=false", "+trainer.fast_dev_run=true", "dataset.batch_size=2",
               "dataset.num_workers=0", "++dataset.crop_size=64", "trainer.enable_progress_bar=false"]
PIPELINE_TRAIN = ["trainer.max_epochs=1", "dataset.batch_size=4", "dataset.num_workers=0", "logger=none",
                  "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "trainer.devices=1"]
SYNTHETIC_SIZES = ["dataset.synthetic.num_train=8", "dataset.synthetic.num_val=3", "dataset.synthetic.image_size=[48,48]"]
TOOL_SIZES = {"infer": ["device=cpu", "loader_workers=0", "progress=false", "method.test_crop_size=128",
                        "method.test_stride=128"],
              "evaluate": ["progress=false"], "predict": ["progress=false", "device=cpu", "workers=0"], "pseudo_label": ["progress=false"], "spml_memory": ["progress=false"],
              "pipeline": [  # the synthetic set as the train commands make it, one epoch per training
                  "dataset.extra=[" + ",".join(f"'{s}'" for s in SYNTHETIC_SIZES) + "]", "threshold.calib_size=4",
                  "seed_network.train=['method=cam'," + ",".join(f"'{s}'" for s in PIPELINE_TRAIN) + "]",
                  "second_stage.train=['method=deeplab'," + ",".join(f"'{s}'" for s in PIPELINE_TRAIN) + "]",
                  "seed_network.infer=['progress=false','loader_workers=0','workers=0','device=cpu']",
                  "second_stage.infer=['progress=false','loader_workers=0','device=cpu']"]}


def readme_commands() -> list[str]:
    """`python -m wsss.…` lines of README.md's fenced code blocks, continuation lines joined."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.strip()
            match = re.search(r"python -m wsss\.[a-z_]+(?=\s|$)", line)
            if match and not line.startswith("#"):
                commands.append(line[match.start():])
    return commands


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _weights(out: Path) -> dict:
    """ImageNet-format files for every `backbone.weights=` the README names (random values, real layouts)."""
    import torchvision

    from wsss.models.backbones import build_backbone

    files = {}
    for name, net in (("resnet50.pth", torchvision.models.resnet50()),
                      ("resnet101-5d3b4d8f.pth", torchvision.models.resnet101())):
        torch.save(net.state_dict(), out / name)
        files[f"/path/{name}"] = out / name
    deep = build_backbone("resnet101_deepstem").state_dict()
    cuhk = {}
    for k, v in deep.items():  # wsss deep-stem names -> EMANet / PyTorch-Encoding names
        if k.startswith("conv1."):
            k = k[len("conv1."):]
        elif k.startswith("res"):
            k = f"layer{int(k[3]) - 1}" + k[4:]
        cuhk[k] = v
    for name in ("resnet-101-cuhk.pth", "resnet101s-03a0f310.pth"):
        torch.save(cuhk, out / name)
        files[f"/path/{name}"] = out / name
    mxw = _load(REPO / "tests/fixtures/backbones/mxnet_writer.py", "mxnet_writer")
    r38 = {k: v.numpy() for k, v in build_backbone("resnet38d").state_dict().items()
           if not k.endswith("num_batches_tracked")}
    params = out / "ilsvrc-cls_rna-a1_cls1000_ep-0001.params"
    params.write_bytes(mxw.encode_list({mxw.mxnet_name(k): v for k, v in r38.items()}))
    files["/path/ilsvrc-cls_rna-a1_cls1000_ep-0001.params"] = params
    return files


def _releases(out: Path) -> dict:
    """The authors' files in their released layouts, with the seeded weights of the parity fixtures."""
    fix = REPO / "tests" / "fixtures"
    rtc = _load(fix / "rtc" / "seeded_state.py", "rtc_seeded_state")
    spec = [(e["name"], e["shape"], e["dtype"]) for e in json.loads((fix / "rtc" / "keys.json").read_text())]
    ref = np.load(fix / "rtc" / "reference_cam.npz")
    aff = {k.replace("__", "."): torch.from_numpy(ref[k]) for k in ref.files if k.startswith("_aff")}
    torch.save(rtc.seeded_state_dict(spec, 0, aff), out / "rtc_contrast_best.pth")
    seeded = _load(fix / "spml" / "seeded_state.py", "spml_seeded_state").seeded
    release = out / "spml_release" / "softmax_classifier_stage1"
    release.mkdir(parents=True)
    obj = {part: {k: (torch.zeros(s) if "smooth_kernel" in k else seeded(
        k, tuple(s), torch.long if k.endswith("num_batches_tracked") else torch.float32)) for k, s in table.items()}
        for part, table in json.loads((fix / "spml" / "keys_voc12.json").read_text()).items()}
    torch.save(obj, release / "model-3999.pth")
    return {"rtc_contrast_best.pth": out / "rtc_contrast_best.pth", "DIR_OR_FILE": out / "spml_release"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Data, weights, releases and one trained wsss checkpoint; scores of every image for the pseudo labels."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from conftest import CONF_DIR, compose_train_cfg
    from wsss import infer
    from wsss.engine import fit, load_method_checkpoint

    base = tmp_path_factory.mktemp("readme")
    root = write_voc_folder(base / "VOC2012", num_train=4, num_val=2, size_range=(64, 90), weak=True)
    values = {**_weights(base), **_releases(base)}
    cfg = compose_train_cfg(base / "cam", root, ["dataset=voc", "dataset.num_workers=0", "logger=none",
                                                 "debug=fast", "++dataset.crop_size=64", "dataset.batch_size=2"])
    fit(cfg)
    ckpt = base / "cam" / "checkpoints" / "last.ckpt"
    for split in ("train_aug", "val"):  # OUT/scores of the pseudo-label commands: every image of the set
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            icfg = compose(config_name="infer", overrides=[
                "ckpt=unused", f"dataset.root={root}", f"split={split}", "device=cpu", "loader_workers=0",
                "workers=0", "progress=false"])
        with open_dict(icfg):
            icfg.out_dir = str(base / f"scores_{split}")
        infer.run(icfg, load_method_checkpoint(ckpt))
    from cocogen import write_tiny_coco  # /path/coco_wsss: what scripts/prepare_coco.py writes
    from wsss.prepare.coco import prepare

    write_tiny_coco(base / "COCO2014", size=(72, 80))
    prepare(base / "COCO2014", base / "coco_wsss", workers=1, progress=False)
    values["/path/coco_wsss"] = base / "coco_wsss"
    scores = base / "all_scores"
    for split in ("train_aug", "val"):
        shutil.copytree(base / f"scores_{split}" / "scores", scores, dirs_exist_ok=True)
    values.update({"PATH": ckpt, "ROOT": root, "/path/to/VOC2012": root, "/path/VOC2012": root,
                   "/path/to/VOCdevkit/VOC2012": root, "OUT/scores": scores, "PSEUDO": base / "pseudo",
                   "LIST": root / "ImageSets/Segmentation/val.txt", "FILE.json": base / "eval.json",
                   "NAME": "seam", "N": "1", "MEMORY.npz": base / "memory.npz",
                   "TEST_OUT": _test_set_predictions(base / "test_out"),
                   "CALIB": root / "ImageSets/Segmentation/train.txt", "RUN": base / "pipeline",
                   "IMAGES": root / "JPEGImages"})
    return base, values


def _test_set_predictions(out: Path) -> Path:
    """TEST_OUT of `wsss.infer split=test`: a tiny label PNG for each of the 1,456 packaged test ids."""
    from wsss.data.formats import write_label_png
    from wsss.export.voc_test import read_ids

    for i, image_id in enumerate(read_ids(None)):
        write_label_png(out / "pred" / f"{image_id}.png", np.full((3, 4), i % 21, np.uint8))
    return out


def substitute(command: str, values: dict, out: Path, index: int) -> list[str]:
    """Placeholders -> generated paths; `[...]` optional groups dropped; each command its own OUT."""
    command = re.sub(r" \[(?:[^\[\]]|\[[^\]]*\])*\]", "", command)  # optional parts, e.g. [scales=[...] flip=true]
    first_infer = next(i for i, c in enumerate(readme_commands()) if c.startswith("python -m wsss.infer "))
    local = dict(values, OUT=out / f"out_{index}", DIR=out / f"out_{first_infer}" / "pred")  # infer's predictions
    args = shlex.split(command)[3:]
    tool = command.split()[2].split(".", 1)[1]
    done = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq:
            for placeholder in sorted(local, key=len, reverse=True):
                if value == placeholder or value.startswith(placeholder + "/"):
                    value = str(local[placeholder]) + value[len(placeholder):]
                    break
            unknown = re.fullmatch(r"[A-Z][A-Z_]*(?:/.*)?|/path/.*", value)
            assert not unknown, f"README placeholder {value!r} in `{command}` is unknown to tests/test_readme.py"
            arg = f"{key}={value}"
        done.append(arg)
    sizes = TRAIN_SIZES if tool == "train" else TOOL_SIZES.get(tool, [])
    if tool == "train" and not any(a.startswith(("dataset=", "experiment=", "dataset.root=")) for a in done):
        sizes = sizes + SYNTHETIC_SIZES  # the embedded synthetic set, made small
    if tool == "infer" and not any(a.startswith("method=spml") for a in done):
        sizes = [s for s in sizes if not s.startswith("method.")]
    return [sys.executable, "-m", f"wsss.{tool}", *done, *sizes]


def test_readme_has_the_commands_users_need():
    tools = {c.split()[2] for c in readme_commands()}
    assert {"wsss.train", "wsss.infer", "wsss.evaluate", "wsss.pseudo_label"} <= tools, tools


def test_every_readme_command_runs(env, tmp_path):
    base, values = env
    work = tmp_path / "work"
    work.mkdir()
    run_env = dict(os.environ, WSSS_DATA_DIR=str(work / "data"), WANDB_MODE="offline",
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    failures = []
    for index, command in enumerate(readme_commands()):
        argv = substitute(command, values, work, index)
        proc = subprocess.run(argv, cwd=work, env=run_env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            failures.append(f"README: {command}\nran: {shlex.join(argv)}\n{proc.stderr[-2500:]}")
    assert not failures, "\n\n".join(failures)
