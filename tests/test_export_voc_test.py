"""wsss.export_voc_test: the evaluation server's layout, byte-stable archives, and every refusal named."""
from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import python_exe
from wsss.data.formats import read_split_list, write_label_png
from wsss.export.voc_test import ExportError, export, read_ids

TEST_LIST_SIZE = 1456


@pytest.fixture(scope="module")
def test_preds(tmp_path_factory) -> Path:
    """A prediction for every id of the packaged test list (tiny label maps)."""
    folder = tmp_path_factory.mktemp("test_pred") / "pred"
    for i, image_id in enumerate(read_ids(None)):
        label = np.zeros((4, 5), np.uint8)
        label[1:3, 1:4] = 1 + i % 20
        write_label_png(folder / f"{image_id}.png", label)
    return folder


def copy_of(folder: Path, dest: Path, ids) -> Path:
    dest.mkdir(parents=True)
    for image_id in ids:
        (dest / f"{image_id}.png").write_bytes((folder / f"{image_id}.png").read_bytes())
    return dest


def test_packaged_list_is_the_voc12_test_set():
    ids = read_ids(None)
    assert len(ids) == TEST_LIST_SIZE == len(set(ids))
    assert all(len(i) == 11 and i[4] == "_" for i in ids)


def test_archive_has_the_server_layout_and_is_byte_stable(tmp_path, test_preds):
    out = export(test_preds, tmp_path / "results.tar.gz", read_ids(None), comp=6)
    with tarfile.open(out) as tar:
        names = tar.getnames()
        first = tar.extractfile(names[0]).read()
    ids = sorted(read_ids(None))
    assert names == [f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png" for i in ids]
    assert first == (test_preds / f"{ids[0]}.png").read_bytes()
    again = export(test_preds, tmp_path / "again.tgz", read_ids(None), comp=6)
    assert again.read_bytes() == out.read_bytes()
    comp5 = export(test_preds, tmp_path / "comp5.tar.gz", read_ids(None), comp=5)
    with tarfile.open(comp5) as tar:
        assert tar.getnames()[0].startswith("results/VOC2012/Segmentation/comp5_test_cls/")


def test_missing_and_extra_ids_are_named(tmp_path, test_preds):
    ids = read_ids(None)
    folder = copy_of(test_preds, tmp_path / "pred", ids[2:])
    write_label_png(folder / "2099_000001.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ExportError) as err:
        export(folder, tmp_path / "r.tar.gz", ids)
    message = str(err.value)
    assert f"2 ids of the test list have no prediction: {ids[0]}, {ids[1]}" in message or (
        "2 ids of the test list have no prediction" in message and ids[0] in message and ids[1] in message)
    assert "1 predictions are not in the test list" in message and "2099_000001" in message
    assert not (tmp_path / "r.tar.gz").exists()


@pytest.mark.parametrize("damage, reason", [
    ("grayscale", "mode L, not an indexed (P) PNG"),
    ("palette", "colour map is not the VOC one"),
    ("value21", "values [21] outside the 21 VOC classes"),
    ("boundary", "values [255] outside the 21 VOC classes"),
    ("jpeg", "a JPEG file, not a PNG"),
    ("truncated", "not a readable PNG"),
])
def test_files_the_server_would_reject_are_refused_by_name(tmp_path, test_preds, damage, reason):
    ids = read_ids(None)[:3]
    folder = copy_of(test_preds, tmp_path / "pred", ids)
    bad = folder / f"{ids[1]}.png"
    label = np.ones((4, 5), np.uint8)
    if damage == "grayscale":
        Image.fromarray(label, mode="L").save(bad)
    elif damage == "palette":
        img = Image.fromarray(label, mode="P")
        img.putpalette([255 - v % 256 for v in range(768)])
        img.save(bad)
    elif damage == "value21":
        label[0, 0] = 21
        write_label_png(bad, label)
    elif damage == "boundary":
        label[0, 0] = 255
        write_label_png(bad, label)
    elif damage == "jpeg":
        Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(bad, format="JPEG")
    else:
        bad.write_bytes(bad.read_bytes()[:30])
    list_file = tmp_path / "three.txt"
    list_file.write_text("\n".join(ids) + "\n")
    with pytest.raises(ExportError, match="1 of 3 predictions would be rejected") as err:
        export(folder, tmp_path / "r.tar.gz", read_split_list(list_file))
    assert f"{ids[1]}.png: " in str(err.value) and reason in str(err.value)
    assert not (tmp_path / "r.tar.gz").exists()


def test_sizes_are_checked_against_the_images(tmp_path, test_preds):
    ids = read_ids(None)[:2]
    folder = copy_of(test_preds, tmp_path / "pred", ids)
    images = tmp_path / "JPEGImages"
    images.mkdir()
    Image.new("RGB", (5, 4)).save(images / f"{ids[0]}.jpg")
    Image.new("RGB", (7, 4)).save(images / f"{ids[1]}.jpg")
    with pytest.raises(ExportError, match=f"{ids[1]}.png: size 5x4, but its image is 7x4"):
        export(folder, tmp_path / "r.tar.gz", ids, image_dir=images)
    Image.new("RGB", (5, 4)).save(images / f"{ids[1]}.jpg")
    assert export(folder, tmp_path / "r.tar.gz", ids, image_dir=images).is_file()


def test_bad_arguments_say_what_to_pass(tmp_path, test_preds):
    ids = read_ids(None)
    with pytest.raises(ExportError, match="comp=4: use comp=5"):
        export(test_preds, tmp_path / "r.tar.gz", ids, comp=4)
    with pytest.raises(ExportError, match="takes a .tar.gz"):
        export(test_preds, tmp_path / "r.zip", ids)
    with pytest.raises(ExportError, match="pred_dir=.*not a folder"):
        export(tmp_path / "nope", tmp_path / "r.tar.gz", ids)


def test_cli_writes_the_archive_and_fails_with_the_reason(tmp_path, test_preds):
    ids = read_ids(None)[:2]
    folder = copy_of(test_preds, tmp_path / "pred", ids)
    list_file = tmp_path / "two.txt"
    list_file.write_text("\n".join(ids) + "\n")
    out = tmp_path / "results.tar.gz"
    ok = subprocess.run([python_exe(), "-m", "wsss.export_voc_test", f"pred_dir={folder}", f"out={out}",
                         f"list={list_file}", "progress=false", f"hydra.run.dir={tmp_path / 'run'}"],
                        capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "wrote" in ok.stdout and out.is_file()
    (folder / f"{ids[0]}.png").unlink()
    failed = subprocess.run([python_exe(), "-m", "wsss.export_voc_test", f"pred_dir={folder}",
                             f"out={tmp_path / 'other.tar.gz'}", f"list={list_file}",
                             f"hydra.run.dir={tmp_path / 'run2'}"], capture_output=True, text=True, cwd=tmp_path)
    assert failed.returncode != 0 and f"no prediction: {ids[0]}" in failed.stderr
    assert not (tmp_path / "other.tar.gz").exists()
