"""scripts/prepare_coco.py on a tiny generated COCO 2014 (tests/cocogen.py): masks against an independent
rasterisation, lists, labels, class names, symlinks, resuming, and every bad input the issue names."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cocogen import CLASS_NAMES, CLASS_OF, NUM_FG, labels_of, write_tiny_coco
from wsss.data.formats import load_cls_labels_npy, read_split_list
from wsss.prepare.coco import PrepareError, main, prepare

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = tmp_path_factory.mktemp("coco")
    expected = write_tiny_coco(base / "COCO2014")
    result = prepare(base / "COCO2014", base / "out", workers=2, progress=False)
    return base, expected, result


def test_masks_equal_an_independent_rasterisation(prepared):
    base, expected, _ = prepared
    for split, truth in expected.items():
        for stem, label in truth.items():
            img = Image.open(base / "out" / "SegmentationClass" / split / f"{stem}.png")
            assert img.mode == "L"
            np.testing.assert_array_equal(np.asarray(img), label, err_msg=f"{split}/{stem}")
    # the cases are there: overlap with the small object on top, crowd 255, an empty image
    first = expected["train2014"]["COCO_train2014_000000000001"]
    assert {0, CLASS_OF[1], CLASS_OF[90], 255} == set(np.unique(first).tolist()) and CLASS_OF[90] == 80
    assert not expected["train2014"]["COCO_train2014_000000000003"].any()


def test_lists_labels_names_and_links(prepared):
    base, expected, result = prepared
    out = base / "out"
    assert read_split_list(out / "ImageSets" / "train.txt") == [
        f"COCO_train2014_{n:012d}" for n in (1, 2, 5)]  # 3 has no annotation, 4 only a crowd region
    assert read_split_list(out / "ImageSets" / "val_all.txt") == [f"COCO_val2014_{n:012d}" for n in range(1001, 1006)]
    assert (out / "class_names.txt").read_text().splitlines() == CLASS_NAMES
    labels = load_cls_labels_npy(out / "cls_labels.npy", NUM_FG)
    assert len(labels) == 10
    for split, truth in expected.items():
        for stem, label in truth.items():
            np.testing.assert_array_equal(labels[stem], labels_of(label), err_msg=stem)
    for split in ("train2014", "val2014"):
        link = out / "images" / split
        assert link.is_symlink() and link.resolve() == (base / "COCO2014" / split).resolve()
    assert result["summary"]["train2014"] == {"images": 5, "annotated": 3, "with_crowd": 2, "written": 5,
                                              "kept": 0, "missing": 0}


def test_rerun_keeps_finished_masks_and_fills_the_gaps(tmp_path):
    write_tiny_coco(tmp_path / "COCO2014")
    prepare(tmp_path / "COCO2014", tmp_path / "out", workers=1, splits=["val"], progress=False)
    done = tmp_path / "out" / "SegmentationClass" / "val2014"
    (done / "COCO_val2014_000000001002.png").unlink()
    stamp = (done / "COCO_val2014_000000001001.png").stat().st_mtime_ns
    res = prepare(tmp_path / "COCO2014", tmp_path / "out", workers=1, splits=["val"], progress=False)
    assert res["summary"]["val2014"]["written"] == 1 and res["summary"]["val2014"]["kept"] == 4
    assert (done / "COCO_val2014_000000001001.png").stat().st_mtime_ns == stamp
    assert not [p for p in done.iterdir() if p.name.endswith(".tmp")]


def _edit_json(root: Path, split: str, edit) -> None:
    path = root / "annotations" / f"instances_{split}2014.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["annotations"][0].update(category_id=12), "annotation 7: category_id 12 is not in the json's"),
    (lambda d: d["annotations"][0].update(segmentation=[]), "annotation 7 (image COCO_val2014_000000001001): "
                                                            "malformed segmentation, empty polygon list"),
    (lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3, 4]]), "polygon with 4 coordinates"),
    (lambda d: d["annotations"][2].update(segmentation={"size": [10, 10], "counts": [100]}),
     "RLE of size [10, 10] on an image of [40, 48]"),
])
def test_bad_annotations_name_file_and_id_and_write_nothing(tmp_path, edit, message):
    write_tiny_coco(tmp_path / "COCO2014")
    _edit_json(tmp_path / "COCO2014", "val", edit)
    with pytest.raises(PrepareError, match="instances_val2014.json") as err:
        prepare(tmp_path / "COCO2014", tmp_path / "out", workers=1, progress=False)
    assert message in str(err.value)
    assert not (tmp_path / "out").exists()


def test_missing_inputs_are_listed_with_their_archives(tmp_path):
    (tmp_path / "COCO2014" / "annotations").mkdir(parents=True)
    with pytest.raises(PrepareError) as err:
        prepare(tmp_path / "COCO2014", tmp_path / "out", progress=False)
    text = str(err.value)
    for piece in ("instances_train2014.json (from annotations_trainval2014.zip)",
                  "instances_val2014.json", "train2014/ (from train2014.zip)", "val2014/ (from val2014.zip)"):
        assert piece in text


def test_missing_image_is_skipped_listed_and_exits_nonzero(tmp_path, capsys):
    write_tiny_coco(tmp_path / "COCO2014")
    gone = tmp_path / "COCO2014" / "train2014" / "COCO_train2014_000000000002.jpg"
    gone.unlink()
    assert main(["--coco", str(tmp_path / "COCO2014"), "--out", str(tmp_path / "out"), "--workers", "1",
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "skipped 1 images" in err and str(gone) in err
    assert "COCO_train2014_000000000002" not in read_split_list(tmp_path / "out" / "ImageSets" / "train_all.txt")
    assert "COCO_train2014_000000000002" not in load_cls_labels_npy(tmp_path / "out" / "cls_labels.npy", NUM_FG)


def test_script_runs_and_prints_the_summary(tmp_path):
    write_tiny_coco(tmp_path / "COCO2014")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_coco.py"), "--coco",
                           str(tmp_path / "COCO2014"), "--out", str(tmp_path / "out"), "--workers", "2",
                           "--splits", "val"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert "val2014" in proc.stdout and "annotated" in proc.stdout and "81 classes" in proc.stdout
