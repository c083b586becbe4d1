"""scripts/prepare_voc.py on a generated VOC 2012 devkit + SBD (tests/sbdgen.py): masks, train_aug, labels, count
and value checks, and the exact messages for incomplete inputs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sbdgen import write_official, write_sbd_mat
from wsss.data.formats import VOC_CLASSES, load_cls_labels_npy, read_split_list
from wsss.prepare.voc import PrepareError, prepare

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def official(tmp_path):
    return write_official(tmp_path)


def test_masks_lists_and_labels(official):
    res = prepare(official["voc"], official["sbd"], workers=2, progress=False)
    voc = official["voc"]
    train_aug = read_split_list(voc / "ImageSets/Segmentation/train_aug.txt")
    assert train_aug == sorted(set(official["sbd_only"]) | set(official["train"]))  # the SBD val-id left out
    for i, want in official["expected"].items():
        img = Image.open(voc / "SegmentationClassAug" / f"{i}.png")
        assert img.mode == "L"
        np.testing.assert_array_equal(np.asarray(img), want, err_msg=i)  # VOC's own mask wins where both exist
    labels = load_cls_labels_npy(voc / "cls_labels.npy", 20)
    assert sorted(labels) == sorted(train_aug + official["val"])
    for i in official["train"]:  # from Annotations XML, which vocgen writes from the mask
        want = np.zeros(20, np.float32)
        want[[v - 1 for v in np.unique(official["expected"][i]) if 0 < v < 255]] = 1
        np.testing.assert_array_equal(labels[i], want)
    for i in official["sbd_only"]:  # no XML here: from the mask
        assert labels[i].sum() == len([v for v in np.unique(official["expected"][i]) if v > 0])
    assert res["summary"]["from_sbd"] == len(official["sbd_only"]) and res["summary"]["labels_from_xml"] == 7
    assert [n.split(":")[0] for n in res["notes"]] == ["train", "val", "train_aug"]  # not the official counts
    again = prepare(official["voc"], official["sbd"], workers=1, progress=False)
    assert again["summary"]["kept"] == again["summary"]["masks"] and again["summary"]["written"] == 0


def test_strict_makes_a_count_mismatch_an_error(official):
    with pytest.raises(PrepareError, match="train_aug: 9 ids, the official release has 10,582"):
        prepare(official["voc"], official["sbd"], strict=True, progress=False)
    assert not (official["voc"] / "SegmentationClassAug").exists()


def test_a_value_outside_the_classes_names_the_file(official):
    bad = official["sbd"] / "dataset/cls" / f"{official['sbd_only'][0]}.mat"
    write_sbd_mat(bad, np.full((40, 40), 37, np.uint8))
    with pytest.raises(PrepareError, match=rf"{bad.name}: values \[37\] outside 0..20 and 255"):
        prepare(official["voc"], official["sbd"], workers=1, progress=False)


def test_missing_inputs_are_named_exactly(tmp_path, official):
    with pytest.raises(PrepareError) as err:
        prepare(tmp_path / "nothing", tmp_path / "nosbd", progress=False)
    text = str(err.value)
    for piece in (f"{tmp_path / 'nothing' / 'JPEGImages'}/ (from VOCtrainval_11-May-2012.tar)",
                  f"{tmp_path / 'nothing' / 'ImageSets/Segmentation/val.txt'} (from VOCtrainval_11-May-2012.tar)",
                  f"{tmp_path / 'nosbd' / 'dataset/cls'}/ (from benchmark.tgz", f"{tmp_path / 'nosbd' / 'dataset/train.txt'}"):
        assert piece in text, piece
    gone = official["sbd"] / "dataset/cls" / f"{official['sbd_only'][1]}.mat"
    gone.unlink()
    (official["voc"] / "SegmentationClass" / f"{official['val'][0]}.png").unlink()
    with pytest.raises(PrepareError, match="2 files named in the split lists are missing") as err:
        prepare(official["voc"], official["sbd"], progress=False)
    assert str(gone) in str(err.value) and f"SegmentationClass/{official['val'][0]}.png" in str(err.value)
    assert not (official["voc"] / "SegmentationClassAug").exists()


def test_script_then_dataset_voc_reads_train_aug(official, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_voc.py"), "--voc", str(official["voc"]),
                           "--sbd", str(official["sbd"]), "--workers", "2", "--no-progress"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert "train_aug 9" in proc.stdout and "warning: train_aug: 9 ids" in proc.stderr
    from wsss.data.voc import VOCSegmentation

    ds = VOCSegmentation(official["voc"], "train_aug", 21)
    assert len(ds) == 9 and ds[0]["mask"].max() <= 20
    assert ds.cls_labels[ds.ids[0]].shape == (len(VOC_CLASSES) - 1,)


def test_readme_prepare_commands_run(tmp_path):
    """The README's `python scripts/prepare_*.py` lines, as users type them, on generated official files."""
    import re
    import shlex

    from cocogen import write_tiny_coco

    official = write_official(tmp_path / "voc_sbd")
    write_tiny_coco(tmp_path / "COCO2014")
    paths = {"/path/COCO2014": tmp_path / "COCO2014", "/path/coco_wsss": tmp_path / "coco_wsss",
             "/path/VOCdevkit/VOC2012": official["voc"], "/path/benchmark_RELEASE": official["sbd"]}
    text = (REPO / "README.md").read_text()
    lines = [ln.strip() for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.S) for ln in block.splitlines()
             if ln.strip().startswith("python scripts/prepare_")]
    assert {ln.split()[1] for ln in lines} == {"scripts/prepare_coco.py", "scripts/prepare_voc.py"}
    for line in lines:
        args = [str(paths.get(a, a)) for a in shlex.split(re.sub(r" \[[^\]]*\]", "", line))[1:]]
        unknown = [a for a in args if a.startswith("/path/")]
        assert not unknown, f"README placeholder {unknown} unknown to this test"
        proc = subprocess.run([sys.executable, str(REPO / args[0]), *args[1:], "--workers", "1", "--no-progress"],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.returncode == 0, (line, proc.stderr)
    assert (tmp_path / "coco_wsss" / "cls_labels.npy").is_file()
    assert (official["voc"] / "ImageSets/Segmentation/train_aug.txt").is_file()
