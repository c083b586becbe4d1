"""``wsss.pseudo_label ckpt=CKPT refine=random_walk``: SPML's random-walk + CRF pseudo labels, image by image.

The method computes each image's walked class maps (``model.random_walk_scores``; SPML:
:mod:`wsss.methods.spml_random_walk`); a process pool runs the dense CRF (``crf=``; ``none``: argmax) and writes
the PNG. The image-level tags are background plus the image's classes (the layout's image labels), or, with
``refine.tags_dir=DIR``, the classes present in ``DIR/ID.png`` - the reference's rule, which reads them from the
stage-1 training label maps (``pseudo_softmaxrw_crf.py:102-106``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from wsss.data.formats import read_image, read_label_png, write_label_png
from wsss.data.layout import Layout
from wsss.distributed import barrier, is_main, local_device, shard, sum_over_ranks
from wsss.metrics.confusion import confusion_matrix_np, scores_from_confusion
from wsss.outputs import claim_output_dir, fingerprint
from wsss.postprocess.crf import CRFPreset, dense_crf
from wsss.reporting import background_protocol


def check_refine_model(model, refine_name: str) -> None:
    if not callable(getattr(model, "random_walk_scores", None)):
        raise ValueError(f"refine={refine_name} walks over a learned pixel embedding; method "
                         f"'{getattr(model, 'method_name', type(model).__name__)}' has none (use method=spml, "
                         "or refine=none)")


def image_tags(item: dict, num_classes: int, tags_dir: Optional[Path]) -> np.ndarray:
    """Bool ``num_classes``: the classes the image's pseudo label may take (background first)."""
    tags = np.zeros(num_classes, bool)
    if tags_dir is not None:
        path = tags_dir / f"{item['id']}.png"
        if not path.is_file():
            raise FileNotFoundError(f"refine.tags_dir: {path} is missing; pass the folder of the stage-1 training "
                                    "label maps (supervision.loader.label_dir) or refine.tags_dir=null")
        present = np.unique(read_label_png(path))
        tags[present[present < num_classes]] = True
        return tags
    if item.get("label") is None:  # no image-level label: every class may appear
        tags[:] = True
        return tags
    tags[0] = True
    tags[1:] = np.asarray(item["label"], dtype=bool)[: num_classes - 1]
    return tags


def crf_label_job(task: dict) -> tuple:
    """CRF (or argmax) of one image's walked maps; write the PNG; ``(id, status, confusion or None)``."""
    if task["scores"] is None:
        status, label = "kept", read_label_png(task["out"], task["num_classes"])
    else:
        scores, preset = task["scores"], task["preset"]
        q = dense_crf(task["image"], scores, preset) if preset.enabled else scores
        label = np.argmax(q, axis=0).astype(np.uint8)
        write_label_png(Path(task["out"]), label)
        status = "written"
    conf = None
    if task["gt"] is not None:
        gt = read_label_png(task["gt"], task["num_classes"])
        conf = confusion_matrix_np(np.array(label), np.array(gt), task["num_classes"])
    return task["id"], status, conf


def random_walk_pseudo_labels(model, cfg, layout: Layout, out_dir: Path, preset: CRFPreset, num_classes: int,
                              class_names: Sequence[str]) -> dict:
    """Label ``cfg.split`` with ``model``'s random walk and the CRF ``preset``; counts and, with GT, metrics."""
    import torch

    from wsss.inference.data import normalize
    from wsss.inference.device import pick_device
    from wsss.inference.split import split_items
    from wsss.methods.spml_random_walk import RandomWalkSettings, crf_image
    from wsss.workers import BackgroundJobs

    refine = dict(cfg.refine)
    check_refine_model(model, refine.get("name", "random_walk"))
    settings = RandomWalkSettings.from_config(refine)
    tags_dir = Path(str(refine["tags_dir"])).expanduser() if refine.get("tags_dir") else None
    if tags_dir is not None and not tags_dir.is_dir():
        raise FileNotFoundError(f"refine.tags_dir={tags_dir} is not a folder of label PNGs")
    split, overwrite = str(cfg.split), bool(cfg.get("overwrite", False))
    device = pick_device(local_device(str(cfg.device)))
    model = model.to(device).eval()
    items = split_items(cfg.dataset, split, num_classes)
    crf = dataclasses.replace(preset, background=None)  # the walk brings its own background (class 0)
    if is_main():
        crf_record = dataclasses.asdict(crf)
        crf_record.pop("source", None)
        settings_record = {"tool": "pseudo_label", "refine": dataclasses.asdict(settings), "ckpt": fingerprint(cfg.ckpt),
                           "tags_dir": None if tags_dir is None else str(tags_dir.absolute()), "split": split,
                           "dataset_root": str(layout.root.absolute()), "num_classes": num_classes,
                           "class_names": list(class_names), "crf": crf_record}
        claim_output_dir(out_dir, settings_record, overwrite,
                         any((out_dir / f"{it['id']}.png").is_file() for it in items))
    barrier()
    gt_folder = layout.mask_dir(split, cfg.get("gt_dir"))
    jobs = BackgroundJobs(crf_label_job, int(cfg.get("workers", 0)))
    try:
        for it in shard(items):
            out = out_dir / f"{it['id']}.png"
            gt = gt_folder / f"{it['id']}.png"
            task = {"id": it["id"], "out": str(out), "gt": str(gt) if gt.is_file() else None, "preset": crf,
                    "num_classes": num_classes, "scores": None}
            if overwrite or not out.is_file():
                image = normalize(read_image(it["image"])).to(device)
                tags = image_tags(it, num_classes, tags_dir)
                with torch.no_grad():
                    task["scores"] = model.random_walk_scores(image, tags, settings)
                task["image"] = crf_image(image)
            jobs.submit(task)
    finally:
        jobs.close()
    return random_walk_result(jobs.results, split, str(cfg.ckpt), out_dir, len(items), crf, gt_folder,
                              num_classes, class_names)


def random_walk_result(results, split: str, ckpt: str, out_dir: Path, num_images: int, crf: CRFPreset,
                       gt_folder: Path, num_classes: int, class_names: Sequence[str]) -> dict:
    """The result dict of :func:`wsss.labelling.labelling_result`, the background being the walk's class 0."""
    conf = np.zeros((num_classes, num_classes), np.int64)
    counts, scored = {"written": 0, "kept": 0}, 0
    for _, status, c in results:
        counts[status] += 1
        if c is not None:
            conf += c
            scored += 1
    conf, totals = sum_over_ranks(conf, [counts["written"], counts["kept"], scored])
    counts["written"], counts["kept"], scored = totals
    res = {"split": split, "scores_dir": f"(random walk) {ckpt}", "out_dir": str(out_dir), "num_images": num_images,
           "written": counts["written"], "kept": counts["kept"], "crf": crf.name,
           "background": background_protocol("learned", chosen="learned", source="refine=random_walk (class 0)"),
           "gt_dir": str(gt_folder), "num_scored": scored, "num_classes": num_classes,
           "class_names": list(class_names)}
    if scored:
        res.update(scores_from_confusion(conf, class_names))
        res["confusion"] = conf.tolist()
        res["threshold"] = None
    return res
