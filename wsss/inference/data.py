"""Images of a split at several scales, batched by original size so no padding changes the outputs.

The seed repos (PSA, SEAM, RTC) resize the uint8 image with PIL bicubic to ``(round(W*s), round(H*s))``
before normalising (``resize=pil_bicubic``); ``resize=bilinear`` resizes the normalised float image with
``torch`` instead; ``resize=cv2_bilinear`` is SPML's ``create_image_pyramid`` (``spml/data/transforms.py: resize``):
``cv2.resize(..., INTER_LINEAR)`` of the normalised float32 HxWx3 image to ``(int(W*s), int(H*s))``;
``resize=bilinear_int`` is RecurSeed's ``torch_utils.resize``: torch bilinear (``align_corners=False``, no
antialias) of the normalised image to ``(int(H*s), int(W*s))``.
Images of the same size form a batch, so every scale is one forward of the whole batch (and its flips) with
bit-identical per-image results.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, Sampler

from wsss.data.formats import read_image
from wsss.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def scaled_size(height: int, width: int, scale: float) -> tuple:
    """``(h, w)`` of an image resized by ``scale`` with Python's ``round`` (what the seed repos use)."""
    return round(height * scale), round(width * scale)


def normalize(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float32, ``(x/255 - mean) / std``."""
    arr = (np.asarray(image, np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def image_pyramid(image: np.ndarray, scales: Sequence[float], resize: str = "pil_bicubic",
                  mean=IMAGENET_MEAN, std=IMAGENET_STD) -> List[torch.Tensor]:
    """One normalised ``3 x h_s x w_s`` tensor per scale."""
    h, w = image.shape[:2]
    base = normalize(image, mean, std)
    out = []
    for s in scales:
        size = scaled_size(h, w, s)
        if resize == "cv2_bilinear":  # SPML: int() sizes; cv2 returns a copy when the size is unchanged
            import cv2

            size = (int(s * h), int(s * w))
            hwc = np.ascontiguousarray(base.numpy().transpose(1, 2, 0))
            out.append(base if size == (h, w) else torch.from_numpy(np.ascontiguousarray(
                cv2.resize(hwc, (size[1], size[0]), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1))))
        elif resize == "bilinear_int":  # RecurSeed torch_utils.resize: int() sizes, no call when unchanged
            size = (int(h * s), int(w * s))
            out.append(base if size == (h, w) else
                       F.interpolate(base[None], size=size, mode="bilinear", align_corners=False)[0])
        elif size == (h, w):
            out.append(base)
        elif resize == "pil_bicubic":
            resized = Image.fromarray(image).resize((size[1], size[0]), resample=Image.BICUBIC)
            out.append(normalize(np.asarray(resized), mean, std))
        elif resize == "bilinear":
            out.append(F.interpolate(base[None], size=size, mode="bilinear", align_corners=False)[0])
        else:
            raise ValueError(f"resize must be pil_bicubic, bilinear, cv2_bilinear or bilinear_int, not {resize!r}")
    return out


class PyramidImages(Dataset):
    """``{"name", "size", "cls", "inputs": [per-scale tensors]}`` for a list of image files."""

    def __init__(self, ids: Sequence[str], image_paths: Sequence[str], labels: Sequence[Optional[np.ndarray]],
                 scales: Sequence[float], resize: str = "pil_bicubic"):
        self.ids, self.paths, self.labels = list(ids), list(image_paths), list(labels)
        self.scales, self.resize = [float(s) for s in scales], resize

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        image = read_image(self.paths[index])
        label = self.labels[index]
        return {"name": self.ids[index], "size": image.shape[:2],
                "cls": None if label is None else torch.as_tensor(label, dtype=torch.float32),
                "inputs": image_pyramid(image, self.scales, self.resize)}


def collate_pyramids(samples: List[dict]) -> dict:
    """Stack same-size samples scale by scale (the sampler guarantees equal sizes)."""
    sizes = {tuple(s["size"]) for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"a batch mixes image sizes {sorted(sizes)}; use SizeBatchSampler")
    return {"name": [s["name"] for s in samples], "size": samples[0]["size"],
            "cls": [s["cls"] for s in samples],
            "inputs": [torch.stack([s["inputs"][k] for s in samples]) for k in range(len(samples[0]["inputs"]))]}


def image_size(path: str) -> tuple:
    """``(h, w)`` from the file header (no decoding)."""
    with Image.open(path) as im:
        return im.size[1], im.size[0]


class SizeBatchSampler(Sampler):
    """Batches of up to ``batch_size`` indices whose images share one size, in first-seen order."""

    def __init__(self, sizes: Sequence[tuple], batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        groups: Dict[tuple, List[int]] = OrderedDict()
        for index, size in enumerate(sizes):
            groups.setdefault(tuple(size), []).append(index)
        self.batches = [idx[i:i + batch_size] for idx in groups.values() for i in range(0, len(idx), batch_size)]

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
