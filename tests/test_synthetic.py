"""The embedded synthetic VOC-format set: real layout and formats, deterministic, idempotent, learnable."""
from __future__ import annotations

import colorsys
import json
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

import wsss.data.synthetic as synthetic
from wsss.data.formats import load_cls_labels_npy, read_split_list, voc_palette
from wsss.data.synthetic import SYNTHETIC_CLASSES, SyntheticDataError, ensure_synthetic_voc

SMALL = dict(num_train=40, num_val=20, image_size=(64, 96), num_classes=6, seed=3)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return ensure_synthetic_voc(tmp_path_factory.mktemp("syn") / "voc", **SMALL)


def _ids(root):
    seg = root / "ImageSets" / "Segmentation"
    return read_split_list(seg / "train.txt"), read_split_list(seg / "val.txt")


def _png(path):
    return np.asarray(Image.open(path))


def _all_files(root):
    return sorted(p for p in Path(root).rglob("*") if p.is_file())


def test_class_names_follow_voc():
    assert SYNTHETIC_CLASSES[0] == "background" and SYNTHETIC_CLASSES[-1] == "tvmonitor"
    assert len(SYNTHETIC_CLASSES) == 21


def test_layout_and_split_lists(small_set):
    root = small_set
    train, val = _ids(root)
    assert len(train) == 40 and len(val) == 20 and not set(train) & set(val)
    assert train[0] == "2000_000001"
    assert read_split_list(root / "ImageSets/Segmentation/train_aug.txt") == train
    assert (root / "class_names.txt").read_text().split() == list(SYNTHETIC_CLASSES[:6])
    params = json.loads((root / "synthetic.json").read_text())
    assert params["num_classes"] == 6 and params["image_size"] == [64, 96] and params["seed"] == 3
    for name in ("JPEGImages", "SegmentationClass", "SegmentationObject", "SegmentationClassAug",
                 "Annotations", "scribble", "points", "hed", "saliency"):
        stems = sorted(p.stem for p in (root / name).iterdir())
        assert stems == sorted(train + val), name
    assert not list(root.parent.glob(".voc.tmp-*")), "temporary build folders left behind"


def test_images_and_masks_have_the_real_formats(small_set):
    root = small_set
    palette = voc_palette()
    band_pixels = far_from_labels = 0
    for image_id in sum(_ids(root), []):
        img = Image.open(root / "JPEGImages" / f"{image_id}.jpg")
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (96, 64)
        seg = Image.open(root / "SegmentationClass" / f"{image_id}.png")
        assert seg.mode == "P" and seg.getpalette()[:768] == palette
        aug = Image.open(root / "SegmentationClassAug" / f"{image_id}.png")
        assert aug.mode == "L"
        seg, aug = np.asarray(seg), np.asarray(aug)
        assert set(np.unique(seg)) <= set(range(6)) | {255}
        assert set(np.unique(aug)) <= set(range(6))
        band = seg == 255
        assert np.array_equal(seg[~band], aug[~band])
        # every class edge is void on both sides, and the band is at most ~2 px wide
        edge_h = aug[:, 1:] != aug[:, :-1]
        edge_v = aug[1:, :] != aug[:-1, :]
        assert band[:, 1:][edge_h].all() and band[:, :-1][edge_h].all()
        assert band[1:, :][edge_v].all() and band[:-1, :][edge_v].all()
        band_pixels += band.sum()
        # ~2 px wide: nearly every void pixel has a labelled pixel within 2 px (thin slivers aside)
        far_from_labels += (band & ~ndimage.binary_dilation(~band, np.ones((5, 5)))).sum()
        obj = Image.open(root / "SegmentationObject" / f"{image_id}.png")
        assert obj.mode == "P"
        obj = np.asarray(obj)
        assert np.array_equal(obj == 255, band)
        assert np.array_equal(obj[~band] > 0, aug[~band] > 0)
    assert far_from_labels <= 0.002 * band_pixels
    assert band_pixels < 0.25 * 60 * 64 * 96


def test_xml_boxes_match_mask_extents(small_set):
    root = small_set
    names = list(SYNTHETIC_CLASSES[:6])
    n_objects = []
    for image_id in sum(_ids(root), []):
        tree = ET.parse(root / "Annotations" / f"{image_id}.xml").getroot()
        assert tree.findtext("filename") == f"{image_id}.jpg"
        assert (int(tree.findtext("size/width")), int(tree.findtext("size/height"))) == (96, 64)
        aug = _png(root / "SegmentationClassAug" / f"{image_id}.png")
        boxes = {}
        objects = tree.findall("object")
        n_objects.append(len(objects))
        for obj in objects:
            c = names.index(obj.findtext("name"))
            assert c >= 1
            b = [int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
            assert 1 <= b[0] <= b[2] <= 96 and 1 <= b[1] <= b[3] <= 64
            boxes.setdefault(c, []).append(b)
        assert set(boxes) == set(np.unique(aug)) - {0}
        for c, bs in boxes.items():
            ys, xs = np.nonzero(aug == c)
            bs = np.array(bs)
            # VOC boxes are 1-based inclusive: union of the class's boxes = its mask extent
            assert (bs[:, 0].min(), bs[:, 1].min()) == (xs.min() + 1, ys.min() + 1)
            assert (bs[:, 2].max(), bs[:, 3].max()) == (xs.max() + 1, ys.max() + 1)
    assert min(n_objects) == 1 and max(n_objects) >= 3


def test_cls_labels_agree_with_masks(small_set):
    root = small_set
    labels = load_cls_labels_npy(root / "cls_labels.npy", num_classes=5)
    train, val = _ids(root)
    assert set(labels) == set(train + val)
    classes_per_image = []
    for image_id, vec in labels.items():
        assert vec.dtype == np.float32 and vec.shape == (5,)
        aug = _png(root / "SegmentationClassAug" / f"{image_id}.png")
        seg = _png(root / "SegmentationClass" / f"{image_id}.png")
        present = np.isin(np.arange(1, 6), aug).astype(np.float32)
        assert np.array_equal(vec, present), image_id
        # every tagged class keeps pixels outside the void band
        assert np.array_equal(np.isin(np.arange(1, 6), seg).astype(np.float32), present)
        classes_per_image.append(int(vec.sum()))
    assert min(classes_per_image) == 1 and max(classes_per_image) >= 3
    # every class occurs in the set
    assert np.stack(list(labels.values())).sum(0).min() > 0


def test_weak_annotations(small_set):
    root = small_set
    pure_fraction = []
    for image_id in sum(_ids(root), []):
        aug = _png(root / "SegmentationClassAug" / f"{image_id}.png")
        n_objects = len(ET.parse(root / "Annotations" / f"{image_id}.xml").getroot().findall("object"))
        present = set(np.unique(aug).tolist())
        for kind in ("scribble", "points"):
            img = Image.open(root / kind / f"{image_id}.png")
            assert img.mode == "L"
            weak = np.asarray(img)
            labelled = weak != 255
            assert np.array_equal(weak[labelled], aug[labelled]), (kind, image_id)
            assert set(np.unique(weak[labelled]).tolist()) == present, (kind, image_id)
            assert labelled.mean() < 0.2
        scribble = _png(root / "scribble" / f"{image_id}.png")
        for c in present:  # SPML's loader dilates scribbles 3x3: they must stay inside their region
            grown = ndimage.binary_dilation(scribble == c, np.ones((3, 3)))
            assert (aug[grown] == c).all(), (image_id, c)
        points = _png(root / "points" / f"{image_id}.png")
        assert ((points != 255) & (points != 0)).sum() == n_objects
        assert 3 <= (points == 0).sum() <= 5
        hed = Image.open(root / "hed" / f"{image_id}.png")
        assert hed.mode in ("I;16", "I")
        seg_ids = np.asarray(hed).astype(np.int64)
        k = seg_ids.max() + 1
        assert np.array_equal(np.unique(seg_ids), np.arange(k)) and k >= 40
        # a superpixel is "pure" when one class covers it
        pairs = np.unique(seg_ids * 256 + aug.astype(np.int64))
        pure_fraction.append(1 - (len(pairs) - k) / k)
        sal = Image.open(root / "saliency" / f"{image_id}.png")
        assert sal.mode == "L"
        sal = np.asarray(sal).astype(float)
        assert sal[aug > 0].mean() > sal[aug == 0].mean() + 100
    assert np.mean(pure_fraction) > 0.9


def test_same_seed_gives_byte_identical_files(tmp_path):
    params = dict(num_train=6, num_val=3, image_size=(48, 64), num_classes=6, seed=7)
    a = ensure_synthetic_voc(tmp_path / "a", **params)
    b = ensure_synthetic_voc(tmp_path / "b", **params)
    files_a, files_b = _all_files(a), _all_files(b)
    assert [p.relative_to(a) for p in files_a] == [p.relative_to(b) for p in files_b]
    for fa, fb in zip(files_a, files_b):
        assert fa.read_bytes() == fb.read_bytes(), fa.relative_to(a)
    c = ensure_synthetic_voc(tmp_path / "c", **{**params, "seed": 8})
    assert (a / "JPEGImages/2000_000001.jpg").read_bytes() != (c / "JPEGImages/2000_000001.jpg").read_bytes()


def test_second_call_rewrites_nothing(small_set):
    before = {p: p.stat().st_mtime_ns for p in _all_files(small_set)}
    inode = small_set.stat().st_ino
    assert ensure_synthetic_voc(small_set, **SMALL) == small_set
    assert {p: p.stat().st_mtime_ns for p in _all_files(small_set)} == before
    assert small_set.stat().st_ino == inode


def test_changed_parameters_or_force_regenerate(tmp_path):
    root = tmp_path / "voc"
    params = dict(num_train=4, num_val=2, image_size=(48, 64), num_classes=6, seed=0)
    ensure_synthetic_voc(root, **params)
    (root / "cam").mkdir()  # something a later step wrote: goes with the old set
    ensure_synthetic_voc(root, **{**params, "num_val": 3})
    assert len(read_split_list(root / "ImageSets/Segmentation/val.txt")) == 3
    assert json.loads((root / "synthetic.json").read_text())["num_val"] == 3
    assert len(list((root / "JPEGImages").iterdir())) == 7 and not (root / "cam").exists()

    ensure_synthetic_voc(root, **{**params, "num_classes": 21})
    assert (root / "class_names.txt").read_text().split() == list(SYNTHETIC_CLASSES)
    labels = load_cls_labels_npy(root / "cls_labels.npy", num_classes=20)
    assert len(labels) == 6
    xml_names = {o.findtext("name") for p in (root / "Annotations").iterdir()
                 for o in ET.parse(p).getroot().findall("object")}
    assert xml_names <= set(SYNTHETIC_CLASSES[1:])

    inode = root.stat().st_ino
    marker = root / "JPEGImages" / "2000_000001.jpg"
    data = marker.read_bytes()
    ensure_synthetic_voc(root, **{**params, "num_classes": 21}, force=True)
    assert root.stat().st_ino != inode and marker.read_bytes() == data


def test_incomplete_set_is_regenerated(tmp_path):
    root = tmp_path / "voc"
    params = dict(num_train=3, num_val=2, image_size=(48, 64))
    ensure_synthetic_voc(root, **params)
    (root / "hed" / "2000_000002.png").unlink()
    ensure_synthetic_voc(root, **params)
    assert (root / "hed" / "2000_000002.png").is_file()


def test_killed_generation_never_looks_complete(tmp_path, monkeypatch):
    root = tmp_path / "voc"
    real = synthetic._write_set

    def dies_half_way(out, params):
        (out / "JPEGImages").mkdir()
        (out / "JPEGImages" / "x.jpg").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_write_set", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_voc(root, num_train=2, num_val=1)
    assert not root.exists()
    # a SIGKILLed run leaves its temp folder: the next run ignores and removes it
    (tmp_path / ".voc.tmp-dead").mkdir()
    monkeypatch.setattr(synthetic, "_write_set", real)
    ensure_synthetic_voc(root, num_train=2, num_val=1)
    assert (root / "synthetic.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".voc.lock", "voc"]


def test_concurrent_callers_generate_once(tmp_path, monkeypatch):
    root = tmp_path / "voc"
    calls = []
    real = synthetic._write_set

    def counting(out, params):
        calls.append(out)
        real(out, params)

    monkeypatch.setattr(synthetic, "_write_set", counting)
    results, errors = [], []

    def worker():
        try:
            results.append(ensure_synthetic_voc(root, num_train=5, num_val=2, image_size=(48, 64)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [root] * 3
    assert len(calls) == 1
    assert len(list((root / "JPEGImages").iterdir())) == 7


def test_refuses_to_overwrite_a_folder_it_did_not_write(tmp_path):
    root = tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "JPEGImages" / "2007_000032.jpg").write_bytes(b"real data")
    with pytest.raises(SyntheticDataError, match="VOC2012.*not a synthetic set"):
        ensure_synthetic_voc(root, num_train=2, num_val=1)
    assert (root / "JPEGImages" / "2007_000032.jpg").read_bytes() == b"real data"


@pytest.mark.parametrize("bad", [dict(num_classes=22), dict(num_classes=1), dict(image_size=(16, 16)),
                                 dict(num_val=0), dict(seed=-1)])
def test_bad_parameters_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        ensure_synthetic_voc(tmp_path / "voc", **bad)
    assert not (tmp_path / "voc").exists()


def _object_features(root, ids):
    """Per (image, class) region: mean RGB and mean HSV saturation of its interior pixels."""
    feats, classes, bg_sat = [], [], []
    for image_id in ids:
        img = np.asarray(Image.open(root / "JPEGImages" / f"{image_id}.jpg")).astype(np.float32) / 255
        aug = _png(root / "SegmentationClassAug" / f"{image_id}.png")
        mx, mn = img.max(-1), img.min(-1)
        sat = (mx - mn) / np.maximum(mx, 1e-6)
        bg_sat.append(sat[aug == 0].mean())
        for c in np.unique(aug):
            if c == 0:
                continue
            inner = ndimage.binary_erosion(aug == c, iterations=1)
            if inner.sum() < 10:
                continue
            feats.append(np.concatenate([img[inner].mean(0), [sat[inner].mean()]]))
            classes.append(int(c))
    return np.array(feats), np.array(classes), float(np.mean(bg_sat))


def test_classes_are_separable_by_appearance(small_set):
    """A nearest-class-mean rule on mean colour, fit on train objects, names val objects' classes:
    the classes carry learnable appearance, and backgrounds are far less saturated than objects."""
    train, val = _ids(small_set)
    f_train, c_train, bg_sat = _object_features(small_set, train)
    f_val, c_val, _ = _object_features(small_set, val)
    centroids = np.stack([f_train[c_train == c].mean(0) for c in range(1, 6)])
    pred = np.argmin(((f_val[:, None, :3] - centroids[None, :, :3]) ** 2).sum(-1), 1) + 1
    accuracy = (pred == c_val).mean()
    assert accuracy >= 0.9, accuracy  # chance is 0.2
    assert f_train[:, 3].mean() > bg_sat + 0.25


def test_class_styles_differ():
    styles = [synthetic.class_style(c) for c in range(1, 21)]
    keys = {(s.texture, round(s.freq, 3), s.angle) for s in styles}
    assert len(keys) == 20
    rgb = np.array([colorsys.hsv_to_rgb(s.hue, s.sat, s.val) for s in styles[:5]])
    dist = np.sqrt(((rgb[:, None] - rgb[None]) ** 2).sum(-1))
    assert dist[np.triu_indices(5, 1)].min() > 0.2
