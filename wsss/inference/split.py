"""The images of a split that inference (and SPML's segment memory) runs on, with labels and GT paths."""
from __future__ import annotations

from pathlib import Path
from typing import List

from wsss.data.layout import layout_from_config


class SplitItem(dict):
    """``id``, ``image`` path, ``label`` (fg multi-hot or None), ``gt`` path or None."""


def split_items(dataset_cfg, split: str, num_classes: int) -> List[SplitItem]:
    """The images of ``split`` of the configured data set (any layout), checked to exist.

    Labels are the layout's image-level labels (:meth:`wsss.data.layout.Layout.image_labels`); an image
    without one gets None (methods then use every class).
    """
    layout = layout_from_config(dataset_cfg)
    ids = layout.split_ids(split)
    if not ids:
        raise ValueError(f"split '{split}' of {dataset_cfg.root} lists no images")
    items = [SplitItem(id=i, image=layout.image_path(i), label=None, gt=layout.mask_path(i, split)) for i in ids]
    for item in items:
        if not Path(item["image"]).is_file():
            raise FileNotFoundError(f"image '{item['id']}' of split '{split}' is missing: expected {item['image']}")
        if not Path(item["gt"]).is_file():
            item["gt"] = None
    labels = layout.image_labels(ids, split, num_classes, strict=False)
    for item in items:
        item["label"] = labels.get(item["id"])
    return items
