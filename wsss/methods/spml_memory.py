"""SPML's segment memory (``python -m wsss.spml_memory``) as a library: the reference's ``prototype.py`` over a
split (:func:`run`), and the command line's retrieval settings applied to a loaded model (:func:`apply_settings`)."""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig


log = logging.getLogger("wsss.spml_memory")  # not __main__ under python -m


def memory_items(cfg: DictConfig, num_classes: int) -> list:
    """``(id, image path, label path)`` of ``cfg.split`` in the order the reference concatenates them."""
    from wsss.inference.split import split_items

    items = split_items(cfg.dataset, str(cfg.split), num_classes)
    labels_dir = cfg.get("labels_dir")
    out = []
    for it in items:
        label = Path(str(labels_dir)).expanduser() / f"{it['id']}.png" if labels_dir else it["gt"]
        if label is None or not Path(label).is_file():
            raise FileNotFoundError(
                f"no label map for image '{it['id']}' of split '{cfg.split}'"
                + (f": expected {label}" if label is not None else "")
                + "; the memory needs a label per pixel (the reference uses the GT masks of train_aug; "
                  "labels_dir=DIR takes DIR/ID.png instead)")
        out.append((it["id"], str(it["image"]), str(label)))
    return sorted(out, key=lambda t: f"{t[0]}.npy")  # load_memory_banks: sorted(glob('*.npy'))


def build_memory(model, items, device: torch.device, progress: bool = True) -> dict:
    """Prototypes and majority labels of every image (``SPMLModule.memory_entries``)."""
    from tqdm import tqdm

    from wsss.data.formats import read_image, read_label_png
    from wsss.inference.data import normalize

    protos, labels, counts = [], [], []
    for image_id, image_path, label_path in tqdm(items, desc="memory", unit="img", disable=not progress):
        image = read_image(image_path)
        label = read_label_png(label_path)
        if label.shape != image.shape[:2]:
            raise ValueError(f"{label_path}: label map {label.shape} but image {image_path} is {image.shape[:2]}")
        p, lab = model.memory_entries(normalize(image)[None].to(device), label)
        protos.append(p)
        labels.append(lab)
        counts.append(len(lab))
    dim = int(model.hparams.embedding_dim)
    return {"prototypes": np.concatenate(protos).astype(np.float32) if protos else np.zeros((0, dim), np.float32),
            "labels": np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64),
            "ids": np.array([t[0] for t in items]), "counts": np.array(counts, np.int64),
            "num_clusters": np.array(model.retrieval_num_clusters), "iterations": np.array(model.kmeans_iterations),
            "test_image_size": np.array(model.test_image_size), "test_crop_size": np.array(model.test_crop_size),
            "test_stride": np.array(model.test_stride)}


def write_memory(path: Path, memory: dict) -> None:
    from wsss.data.formats import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **memory)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def run(cfg: DictConfig, model) -> Path:
    """Write the memory of ``cfg.split`` to ``cfg.out``; returns its path."""
    from wsss.inference.device import pick_device
    from wsss.methods.spml import SPMLModule

    if not isinstance(model, SPMLModule):
        raise ValueError(f"the segment memory is SPML's; {cfg.ckpt} is a {type(model).__name__}")
    out = Path(str(cfg.out)).expanduser()
    if out.suffix != ".npz":
        raise ValueError(f"out={out}: the memory is written as .npz")
    device = pick_device(str(cfg.device))
    model = model.to(device).eval()
    items = memory_items(cfg, model.num_classes)
    log.info("%d images of split '%s'; grid %s, %d k-means iterations, image size %d, crop %s, stride %s",
             len(items), cfg.split, model.retrieval_num_clusters, model.kmeans_iterations, model.test_image_size,
             model.test_crop_size, model.test_stride)
    memory = build_memory(model, items, device, bool(cfg.progress))
    write_memory(out, memory)
    kept = int((memory["labels"] != 255).sum())
    print(f"memory: {out} ({len(memory['labels'])} prototypes, {kept} with a label, {len(items)} images)")
    return out


#: ``method.KEY`` overrides applied to a loaded model (a wsss checkpoint otherwise keeps its saved values)
SETTINGS = ("test_image_size", "test_crop_size", "test_stride", "retrieval_num_clusters", "kmeans.iterations")


def apply_settings(model, cfg: DictConfig, overrides) -> None:
    """The retrieval settings the user gave as ``method.KEY=...`` on the loaded model (same command line for a
    wsss checkpoint, whose saved hyper-parameters are otherwise used, and an official release)."""
    from wsss.methods.spml import _pair

    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    for key in SETTINGS:
        if f"method.{key}" not in given:
            continue
        value = cfg.method.kmeans.iterations if key == "kmeans.iterations" else cfg.method[key]
        if key == "kmeans.iterations":
            model.kmeans_iterations = int(value)
        elif key == "test_image_size":
            model.test_image_size = int(value)
        elif key == "retrieval_num_clusters":
            model.retrieval_num_clusters = list(_pair(value, key))
        else:
            setattr(model, key, _pair(value, key))
