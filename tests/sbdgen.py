"""The official VOC 2012 + SBD files in miniature, for testing scripts/prepare_voc.py on what users download.

Why: prepare_voc must work from ``VOCdevkit/VOC2012`` as it comes (palette ``SegmentationClass`` with its 255
band, ``Annotations/`` XML, ``train.txt`` / ``val.txt``, no ``SegmentationClassAug`` or ``train_aug.txt``) and SBD's
``benchmark_RELEASE/dataset`` (``cls/ID.mat`` with ``GTcls.Segmentation``, ``train.txt``, ``val.txt``). The VOC
folder comes from ``tests/vocgen.py``; the SBD ids overlap it the way the real sets do: some SBD ids are VOC train
ids (VOC's mask must win), one is a VOC val id (it must stay out of train_aug), the rest are SBD only (their JPEGs
live in VOC's JPEGImages, as in the real devkit).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict

import numpy as np
from PIL import Image
from scipy.io import savemat

from vocgen import render, write_voc_folder
from wsss.data.formats import read_label_png, write_split_list


def write_sbd_mat(path: Path, label: np.ndarray) -> None:
    """SBD's cls .mat layout: a GTcls struct with Segmentation, Boundaries and CategoriesPresent."""
    present = np.array([v for v in np.unique(label) if 0 < v < 255], np.uint8)
    savemat(str(path), {"GTcls": {"Segmentation": label.astype(np.uint8), "Boundaries": np.zeros((20, 1)),
                                  "CategoriesPresent": present}}, do_compression=True)


def write_official(base: str | Path, num_train: int = 4, num_val: int = 3, num_sbd_only: int = 5,
                   seed: int = 3) -> Dict[str, object]:
    """Write ``base/VOC2012`` and ``base/benchmark_RELEASE``; returns the ids and the masks prepare must give."""
    base = Path(base)
    voc = write_voc_folder(base / "VOC2012", num_train=num_train, num_val=num_val, size_range=(40, 60), seed=seed)
    shutil.rmtree(voc / "SegmentationClassAug")
    (voc / "ImageSets" / "Segmentation" / "train_aug.txt").unlink()
    voc_ids = (voc / "ImageSets/Segmentation/train.txt").read_text().split()
    val_ids = (voc / "ImageSets/Segmentation/val.txt").read_text().split()
    sbd = base / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    rng = np.random.default_rng(seed + 1)
    expected = {i: read_label_png(voc / "SegmentationClass" / f"{i}.png") for i in voc_ids + val_ids}
    sbd_only = [f"2008_{n:06d}" for n in range(num_sbd_only)]
    for i in sbd_only:
        img, label = render(rng, 20, (40, 60))
        Image.fromarray(img).save(voc / "JPEGImages" / f"{i}.jpg", quality=92)
        write_sbd_mat(sbd / "cls" / f"{i}.mat", label)
        expected[i] = label
    for i in voc_ids[:2] + val_ids[:1]:  # SBD's own (coarser) mask of a VOC id: VOC's must win
        coarse = np.where(expected[i] == 255, 0, expected[i]).astype(np.uint8)
        write_sbd_mat(sbd / "cls" / f"{i}.mat", np.where(coarse > 0, 1, 0).astype(np.uint8))
    write_split_list(sbd / "train.txt", sbd_only[:3] + voc_ids[:1] + val_ids[:1])
    write_split_list(sbd / "val.txt", sbd_only[3:] + voc_ids[1:2])
    return {"voc": voc, "sbd": sbd.parent, "train": voc_ids, "val": val_ids, "sbd_only": sbd_only,
            "expected": expected}
