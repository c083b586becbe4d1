"""The images of a split that inference (and SPML's segment memory) runs on, with labels and GT paths."""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from wsss.data.formats import load_cls_labels, read_label_png


class SplitItem(dict):
    """``id``, ``image`` path, ``label`` (fg multi-hot or None), ``gt`` path or None."""


def split_items(dataset_cfg, split: str, num_classes: int) -> List[SplitItem]:
    """The images of ``split`` of a VOC-layout (or DensePose) root, checked to exist."""
    target = str(dataset_cfg.get("_target_", ""))
    if "densepose" in target.lower():
        from wsss.data.densepose import DensePoseLayout

        layout = DensePoseLayout(dataset_cfg.root)
        ids = layout.split_ids(split)
        items = [SplitItem(id=i, image=layout.image_path(i), label=None, gt=layout.gt_path(i)) for i in ids]
    else:
        from wsss.data.voc import VOCLayout

        layout = VOCLayout(dataset_cfg.root, packaged_fallback=bool(dataset_cfg.get("packaged_lists", False)))
        ids = layout.split_ids(split)
        # the root's own labels, else (below) its GT masks, else the packaged VOC labels (see VOCLayout.image_labels)
        labels_file = layout.cls_labels_file(packaged=False)
        labels = load_cls_labels(labels_file, num_classes - 1) if labels_file is not None else {}
        items = [SplitItem(id=i, image=layout.image_path(i), label=labels.get(i), gt=layout.mask_path(i, split))
                 for i in ids]
    if not items:
        raise ValueError(f"split '{split}' of {dataset_cfg.root} lists no images")
    for item in items:
        if not Path(item["image"]).is_file():
            raise FileNotFoundError(f"image '{item['id']}' of split '{split}' is missing: expected {item['image']}")
        if not Path(item["gt"]).is_file():
            item["gt"] = None
        if item["label"] is None and item["gt"] is not None:
            present = np.unique(read_label_png(item["gt"], num_classes))
            present = present[(present > 0) & (present < num_classes)]
            item["label"] = np.zeros(num_classes - 1, np.float32)
            item["label"][present - 1] = 1.0
    unlabelled = [it for it in items if it["label"] is None]
    packaged = layout.cls_labels_file() if unlabelled and hasattr(layout, "cls_labels_file") else None
    if packaged is not None:
        fallback = load_cls_labels(packaged, num_classes - 1)
        for item in unlabelled:
            item["label"] = fallback.get(item["id"])
    return items
