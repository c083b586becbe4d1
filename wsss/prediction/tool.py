"""``wsss.predict`` as a library: a trained model over any folder of images, no split list, labels or GT.

Per image ``REL`` (its path under ``input``, extension dropped): ``OUT/pred/REL.png`` (VOC-palette labels at the
image's size, after its EXIF orientation), ``OUT/overlay/REL.jpg`` (the labels blended over the image, with a
legend of the classes found), and with ``save_scores=true`` ``OUT/scores/REL.npy`` (a score dict like
``wsss.infer``'s), plus ``OUT/crf/REL.png`` with a CRF preset. Image-level classes, where the method has a
classifier (``image_label_probs``: the CAM baseline), come from it at ``method.inference.cls_threshold``; the
image's most likely class is kept when none passes. Unreadable files are skipped, listed with their reasons.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
from PIL import Image

from wsss.data.formats import atomic_write_bytes, read_label_png
from wsss.inference.data import image_pyramid
from wsss.inference.device import autocast, pick_device
from wsss.inference.runner import prepare_out_dirs, preset_settings, resolve_recipe, write_image_outputs
from wsss.outputs import claim_output_dir, fingerprint, output_dir, write_effective_config
from wsss.distributed import barrier, local_device, merge_dicts, shard, world
from wsss.methods.base import WSSSModule
from wsss.provenance import RunRecord, checkpoint_facts
from wsss.prediction.images import UnreadableImage, find_images, output_names, read_any_image
from wsss.reporting import echo
from wsss.viz.overlay import blend_label, with_legend

log = logging.getLogger("wsss.predict")


def prediction_settings(cfg, model, recipe: dict, preset, root: Path) -> dict:
    """What determines the files (``settings.json``); a rerun resumes only when it is equal."""
    return {"tool": "predict", "ckpt": fingerprint(cfg.ckpt), "method": model.method_name,
            "input": str(root.absolute()), "class_names": list(model.class_names),
            **{k: recipe[k] for k in ("scales", "flip", "resize")}, "cls_threshold": cls_threshold(model, cfg),
            "crf": preset_settings(preset), "precision": str(cfg.precision), "save_scores": bool(cfg.save_scores)}


def cls_threshold(model, cfg) -> float:
    given = cfg.get("cls_threshold")
    return float(given if given is not None else model.inference.get("cls_threshold", 0.5))


def predicted_labels(model, image: torch.Tensor, threshold: float) -> Optional[torch.Tensor]:
    """``B x C-1`` 0/1 image-level labels from the method's classifier (None: the method has none)."""
    probs = model.image_label_probs(image)
    if probs is None:
        return None
    keep = (probs > threshold).float()
    none = keep.sum(dim=1) == 0
    keep[none, probs[none].argmax(dim=1)] = 1.0  # never an image of background only because no class passed
    return keep


def predict_one(model, recipe: dict, threshold: float, image: np.ndarray, name: str, dirs: Dict[str, Path],
                device, cfg, crf, crf_task: dict) -> None:
    """Scores, labels, overlay (and CRF job) of one decoded image."""
    inputs = [x[None].to(device) for x in image_pyramid(image, recipe["scales"], recipe["resize"])]
    with autocast(device, cfg.precision):
        agg = model.multiscale_raw_scores(inputs, image.shape[:2], bool(recipe["flip"]),
                                          channels_last=bool(cfg.get("channels_last"))).float()
        scale1 = next((x for x, s in zip(inputs, recipe["scales"]) if float(s) == 1.0), inputs[0])
        label = predicted_labels(model, scale1, threshold)
    fg = model.foreground_scores(agg).float().cpu().numpy()
    paths = {k: d / f"{name}.{'npy' if k == 'scores' else 'png'}" for k, d in dirs.items() if k != "overlay"}
    rules = dict(recipe, pred_with_labels=label is not None, classes="label" if label is not None else "all")
    write_image_outputs(model, rules, name, None if label is None else label[0].cpu(), agg[0], fg[0], paths, crf,
                        dict(crf_task, image=image))
    pred = read_label_png(paths["pred"])
    found = [int(c) for c in np.unique(pred) if c != 0]
    overlay = with_legend(blend_label(image, pred), found, model.class_names)
    buf = io.BytesIO()
    Image.fromarray(overlay).save(buf, format="JPEG", quality=90)
    atomic_write_bytes(dirs["overlay"] / f"{name}.jpg", buf.getvalue())


def is_done(dirs: Dict[str, Path], name: str) -> bool:
    expected = [d / f"{name}.{'npy' if k == 'scores' else 'jpg' if k == 'overlay' else 'png'}" for k, d in dirs.items()]
    return all(p.is_file() for p in expected)


def run(cfg, model) -> dict:
    """Predict every image under ``cfg.input``; returns ``{"written": n, "skipped_done": n, "unreadable": {...}}``."""
    from tqdm import tqdm

    from wsss.inference.runner import crf_job
    from wsss.postprocess.crf import CRFPreset, load_preset
    from wsss.workers import BackgroundJobs

    root = Path(str(cfg.input)).expanduser()
    files = find_images(root)
    if not files:
        raise FileNotFoundError(f"input={root}: no image files (jpg, jpeg, png, bmp, webp, tif; any case)")
    names = output_names(root, files)
    device = pick_device(local_device(str(cfg.device)))
    model = model.to(device).eval()
    recipe = resolve_recipe(model, cfg)
    preset = CRFPreset.from_config(cfg.crf) if cfg.get("crf") is not None else load_preset(recipe["crf"])
    out_dir = output_dir(cfg)
    dirs = prepare_out_dirs(out_dir, preset.enabled)
    if not cfg.save_scores:
        dirs.pop("scores")
    dirs["overlay"] = out_dir / "overlay"
    rank, ranks = world()  # under torchrun: every rank its share of the files, rank 0 the records
    if rank == 0:
        claim_output_dir(out_dir, prediction_settings(cfg, model, recipe, preset, root), bool(cfg.overwrite),
                         any(next(d.rglob("*.*"), None) is not None for d in dirs.values() if d.is_dir()))
    barrier()
    record = None if rank else RunRecord.start_tool(out_dir, "predict", details={
        "checkpoint": checkpoint_facts(cfg.ckpt), "method": model.method_name, "input": str(root.absolute()),
        "labels_restrict_prediction": False,
        "image_labels_from_classifier": type(model).image_label_probs is not WSSSModule.image_label_probs})
    mine = shard(files)
    todo = [f for f in mine if cfg.overwrite or not is_done(dirs, names[f])]
    log.info("%d images under %s, %d to do -> %s", len(files), root, len(todo), out_dir)
    threshold = cls_threshold(model, cfg)
    crf = BackgroundJobs(crf_job, int(cfg.workers)) if preset.enabled else None
    crf_task = {"preset": preset, "bg": None if model.background.learned else model.background,
                "num_classes": model.num_classes}
    unreadable: Dict[str, str] = {}
    try:
        with torch.no_grad():
            for path in tqdm(todo, desc="predict", unit="img", disable=not cfg.progress):
                try:
                    image = read_any_image(path)
                except UnreadableImage as exc:
                    unreadable[str(path)] = str(exc)
                    continue
                predict_one(model, recipe, threshold, image, names[path], dirs, device, cfg, crf, crf_task)
    finally:
        if crf is not None:
            crf.close()
    result = {"written": len(todo) - len(unreadable), "skipped_done": len(mine) - len(todo),
              "unreadable": merge_dicts(unreadable)}  # every rank's, so every rank exits 2 alike
    if rank:
        barrier()  # leave once rank 0 has written the records
        return result
    unreadable = result["unreadable"]
    if unreadable:
        lines = "\n".join(f"  {p}: {why}" for p, why in sorted(unreadable.items()))
        echo(f"{len(unreadable)} files could not be read and were skipped:\n{lines}", logger=log)
    written = [str(write_effective_config(out_dir, cfg, {"out_dir": str(out_dir), "cls_threshold": threshold,
                                                         **{k: recipe[k] for k in ("scales", "flip", "resize")},
                                                         "crf": {"name": preset.name, **preset_settings(preset)}}))]
    share = f" (rank 0's share of {ranks})" if ranks > 1 else ""
    echo(f"predicted {result['written']} images{share} ({result['skipped_done']} done before) -> {out_dir} "
         f"(pred/, overlay/{', scores/' if cfg.save_scores else ''}{', crf/' if crf else ''}; wrote "
         f"{', '.join(written)})", logger=log)
    record.finish(images=len(files), unreadable=unreadable, ranks=ranks)
    barrier()
    return result
