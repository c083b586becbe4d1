"""The one interface between a data set's files and everything that reads them.

Why: the datamodule, the DDP evaluation sampler, ``wsss.infer``, ``wsss.pseudo_label`` and
``wsss.spml_memory`` must work on any data set. Each data set differs only in where its files are and
where its image-level labels come from, so that is all a :class:`Layout` says. VOC (:mod:`wsss.data.voc`),
DensePose (:mod:`wsss.data.densepose`) and a plain image folder (:mod:`wsss.data.image_folder`) are
layouts. Per-pixel training targets beyond the GT (weak labels, segments, saliency) come from supervision
loaders (:mod:`wsss.data.supervision`), which declare each target's :class:`~wsss.data.targets.TargetSpec`.

MS COCO 2014 (:mod:`wsss.data.coco`, 81 classes) is a layout too: the files ``scripts/prepare_coco.py`` writes from
the official archives, or the AFA/ToCo family's released masks and ``cls_labels_onehot.npy`` as they are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from .formats import DataFormatError


@runtime_checkable
class Layout(Protocol):
    """Where a data set keeps images, GT masks, split lists and image-level labels.

    ``mirror_classes``: the class id of each id after a horizontal mirror (a 256-entry lookup table),
    for data sets with left/right classes; None when mirroring keeps classes.
    """

    root: Path
    mirror_classes: Optional[np.ndarray]

    def split_ids(self, split: str) -> list:
        """The image ids of ``split``, in order; a clear error naming the list file when there is none."""

    def image_path(self, image_id: str) -> Path:
        """The RGB image of ``image_id``."""

    def mask_dir(self, split: str, override: str | None = None) -> Path:
        """The folder of the GT label PNGs of ``split`` (``override``: another folder, e.g. pseudo labels)."""

    def mask_path(self, image_id: str, split: str, override: str | None = None) -> Path:
        """The GT label PNG of ``image_id`` (it need not exist: a split may have no GT)."""

    def image_labels(self, ids: Sequence[str], split: str, num_classes: int, present=None,
                     strict: bool = True) -> Dict[str, np.ndarray]:
        """Foreground multi-hot labels (``num_classes - 1``) by id. ``present`` (id -> class ids in the
        GT, from :func:`wsss.data.checks.scan_label_maps`) saves re-reading masks already checked.
        ``strict``: every id must get a label (else an error naming the files that were looked for)."""


def labels_from_masks(ids: Sequence[str], image_path: Callable[[str], Path], mask_path: Callable[[str], Path],
                      num_classes: int, what: str) -> Dict[str, np.ndarray]:
    """Labels of the ids whose label PNG exists: the classes in it (checked and cached, see ``checks``)."""
    from .checks import labels_from_present, scan_label_maps

    pairs = [(i, image_path(i), mask_path(i)) for i in ids if mask_path(i).is_file()]
    return labels_from_present(scan_label_maps(pairs, num_classes, what), num_classes)


def require_labels(labels: Dict[str, np.ndarray], ids: Sequence[str], split: str, looked_in: str) -> None:
    missing = [i for i in ids if i not in labels]
    if missing:
        raise DataFormatError(
            f"no image-level label for {len(missing)} images of split '{split}' (e.g. {missing[0]}): looked in "
            f"{looked_in}; add the GT masks or a cls_labels.npy (SEAM format) / cls_labels.txt to the root")


def layout_from_config(dataset_cfg, prepare: bool = False) -> Layout:
    """The layout of a ``conf/dataset`` node: its datamodule (``_target_``) knows how to build it.

    ``prepare``: write a synthetic set first where the config asks for one (``prepare_data``).
    """
    from hydra.utils import instantiate

    root = dataset_cfg.get("root")
    if root in (None, "", "???"):
        raise ValueError("dataset.root=... is required (the data set's folder, e.g. the VOC2012 folder holding "
                         "JPEGImages/)")
    datamodule = instantiate(dataset_cfg, _convert_="all")
    if not hasattr(datamodule, "build_layout"):
        raise TypeError(f"dataset._target_={dataset_cfg.get('_target_')} has no build_layout(); a dataset config "
                        "must name a wsss.data.datamodule.SegmentationDataModule (e.g. wsss.data.voc.VOCDataModule)")
    if prepare:
        datamodule.prepare_data()
    return datamodule.build_layout()
