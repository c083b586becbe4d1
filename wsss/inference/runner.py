"""The inference loop of ``wsss.infer``: batched multi-scale + flip scores, per-image outputs, CRF on the side.

Per image: ``scores/ID.npy`` (SEAM's dict), ``pred/ID.png`` (argmax under the method's background rule) and,
with a CRF preset, ``crf/ID.png`` from a pool of worker processes while inference goes on.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from wsss.data.formats import SCORE_FORMATS, read_image, save_score_dict, write_label_png
from wsss.inference.device import autocast
from wsss.methods.registry import tool_owners
from wsss.postprocess.background import RULE_KEYS
from wsss.outputs import check_writable, fingerprint

RECIPE_KEYS = ("scales", "flip", "resize", "classes", "pred_with_labels")


def resolve_recipe(model, cfg) -> dict:
    """The method's inference recipe with the CLI's non-null values on top."""
    recipe = dict(model.inference)
    for key in RECIPE_KEYS:
        if cfg.get(key) is not None:
            value = cfg[key]
            recipe[key] = [float(s) for s in value] if key == "scales" else value
    if cfg.get("cls_threshold") is not None:
        recipe["cls_threshold"] = float(cfg["cls_threshold"])
    if not recipe["scales"] or any(float(s) <= 0 for s in recipe["scales"]):
        raise ValueError(f"scales must be positive numbers, got {recipe['scales']}")
    from wsss.methods.base import check_recipe_values

    check_recipe_values(recipe, "inference")
    return recipe


def recipe_settings(recipe: dict) -> dict:
    """The recipe values that determine the files (the class threshold only where it chooses the classes)."""
    out = {k: recipe[k] for k in RECIPE_KEYS}
    if recipe["classes"] in ("predicted", "peak"):
        out["cls_threshold"] = float(recipe["cls_threshold"])
    if recipe.get("pad_size"):
        out["pad_size"] = recipe["pad_size"]   # only when set: other methods' settings.json stay as they were
    return out


def preset_settings(preset) -> dict:
    """A CRF preset as plain values (its ``source`` citation does not change outputs)."""
    out = dataclasses.asdict(preset)
    out.pop("source", None)
    if out.get("image") == "original":  # the default: settings of earlier runs stay equal
        out.pop("image")
    return out


def inference_settings(cfg, model, recipe: dict, preset) -> dict:
    """What determines the files of ``wsss.infer`` (``settings.json``); a rerun resumes only when it is equal.

    Left out: batch size and worker counts (bit-identical outputs), device and ``channels_last`` (1e-6).
    ``output`` and ``scores_format`` are recorded only when not the default (earlier runs' settings stay equal).
    """
    output = model.output_spec(cfg.get("output")).name
    fmt = str(cfg.get("scores_format") or "npy")
    return {"tool": "infer", "ckpt": fingerprint(cfg.ckpt), "method": model.method_name,
            **({"output": output} if output != model.seed_output else {}),
            **({"scores_format": fmt} if fmt != "npy" else {}),
            "split": str(cfg.split), "dataset_root": str(Path(str(cfg.dataset.root)).expanduser().absolute()),
            "num_classes": int(model.num_classes), "class_names": list(model.class_names),
            **recipe_settings(recipe), "aggregation": model.score_aggregation,
            "background": {k: v for k, v in dict(model.bg).items() if k in RULE_KEYS},
            "crf": preset_settings(preset), "precision": str(cfg.precision),
            **{key: fingerprint(cfg[key]) if cfg.get(key) else None for key in tool_owners()}}


# ----- output folders ------------------------------------------------------------------------
def prepare_out_dirs(out_dir: Path, with_crf: bool) -> Dict[str, Path]:
    dirs = {"scores": out_dir / "scores", "pred": out_dir / "pred"}
    if with_crf:
        dirs["crf"] = out_dir / "crf"
    for path in dirs.values():
        check_writable(path)
    return dirs


def outputs_of(dirs: Dict[str, Path], image_id: str, scores_format: str = "npy") -> Dict[str, Path]:
    """Each output file of ``image_id`` (``scores/ID.npy``, or ``.npz`` for ``scores_format=npz16``)."""
    ext = SCORE_FORMATS[scores_format]
    return {k: d / f"{image_id}{ext if k == 'scores' else '.png'}" for k, d in dirs.items()}


def has_outputs(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds any per-image file of an earlier run."""
    return any(next((out_dir / k).glob("*.*"), None) is not None for k in ("scores", "pred", "crf")
               if (out_dir / k).is_dir())


# ----- CRF jobs (worker processes) -----------------------------------------------------------
def crf_job(task: dict) -> str:
    """Dense CRF of one image from its stored scores; writes the label PNG atomically."""
    from wsss.postprocess.crf import dense_crf, refine

    image = task["image"] if isinstance(task["image"], np.ndarray) else read_image(task["image"])
    if task["probs"] is not None:  # learned background: CRF on the network's own probabilities
        probs, class_ids = task["probs"], np.asarray(task["class_ids"])
        if len(class_ids) < 2:  # one label: nothing to decide (RecurSeed writes zeros, whichever class it is)
            label = np.zeros(probs.shape[1:], np.uint8)
        else:
            label = class_ids[np.argmax(dense_crf(image, probs, task["preset"]), axis=0)].astype(np.uint8)
    else:
        label = refine(image, task["fg"], task["keys"], task["preset"], task["bg"], task["num_classes"])
    write_label_png(task["out"], label)
    return task["out"]


def stored_classes(label: Optional[torch.Tensor], mode: str, num_fg: int) -> List[int]:
    """Foreground indices stored in ``scores/ID.npy``; ``label`` is the predicted one for ``classes=predicted`` /
    ``peak``."""
    if mode in ("predicted", "peak"):
        return [int(k) for k in torch.nonzero(label > 0.5).flatten()]
    if mode == "all" or label is None:
        return list(range(num_fg))
    return [int(k) for k in torch.nonzero(label > 0.5).flatten()]


def write_image_outputs(model, recipe: dict, name: str, label, agg: torch.Tensor, fg: np.ndarray,
                        paths: Dict[str, Path], crf, crf_task: dict, output: Optional[str] = None) -> None:
    """Score dict, prediction PNG and (queued) CRF label of one image from its aggregated raw scores of
    ``output`` (None: the seed output)."""
    keys = stored_classes(label, recipe["classes"], fg.shape[0])
    if "scores" in paths:  # wsss.predict stores them only with save_scores=true
        save_score_dict(paths["scores"], {k: fg[k] for k in keys}, "npz16" if paths["scores"].suffix == ".npz" else "npy")
    full = model.finalize_scores(agg[None], output)[0].float()
    if recipe["pred_with_labels"] and label is not None:
        from wsss.methods.cam_ops import restrict_to_labels

        full = restrict_to_labels(full[None], label[None].to(full.device))[0]
    write_label_png(paths["pred"], full.argmax(0).cpu().numpy().astype(np.uint8))
    if crf is None:
        return
    task = dict(crf_task, out=str(paths["crf"]), probs=None, fg=None, keys=None)
    if model.output_spec(output).has_background and crf_task["preset"].background is None:
        rows = [0] + [k + 1 for k in keys]
        if recipe["classes"] == "peak" and float(full[0].max()) < float(recipe["cls_threshold"]):
            rows = rows[1:]   # infer_seg.py: the background is a class like the others, kept at its peak
        task.update(probs=full[rows].cpu().numpy().astype(np.float32), class_ids=rows)
    else:
        task.update(fg=np.ascontiguousarray(fg[keys]), keys=keys)
    crf.submit(task)


def image_labels(model, recipe: dict, inputs, batch: dict, agg: torch.Tensor, output=None) -> list:
    """Each image's label: the dataset's; with ``classes=predicted`` the method's own classifier's classes (mean
    probability over the scales and flips >= ``cls_threshold``; ``infer_rsepm.py --conf_th``); with
    ``classes=peak`` the classes whose score reaches ``cls_threshold`` somewhere (``infer_seg.py``: 0.05)."""
    if recipe["classes"] == "peak":
        full = model.finalize_scores(agg, output).float()
        peaks = full.flatten(2).amax(dim=2)[:, 1:].cpu()
        return [(p >= float(recipe["cls_threshold"])).float() for p in peaks]
    if recipe["classes"] != "predicted":
        return list(batch["cls"])
    with torch.no_grad():
        probs = model.multiscale_class_probs(inputs, bool(recipe["flip"])).float().cpu()
    return [(p >= float(recipe["cls_threshold"])).float() for p in probs]


# ----- the loop ------------------------------------------------------------------------------
def infer_images(model, todo: list, recipe: dict, preset, dirs: Dict[str, Path], device: torch.device, cfg,
                 on_image=None) -> None:
    """Run ``model`` over the ``todo`` split items and write their outputs (``cfg``: batch size, workers, the
    ``output`` to export, ...). ``on_image(id, label, fg)``: take each image's foreground scores instead of
    writing files (fused pseudo-labelling)."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from wsss.inference.data import PyramidImages, SizeBatchSampler, collate_pyramids, image_size
    from wsss.inference.multiscale import aggregate_raw_scores
    from wsss.workers import BackgroundJobs

    if not todo:
        return
    output = cfg.get("output")
    scores_format = str(cfg.get("scores_format") or "npy")
    rule = model.background
    bg = None if rule.learned else rule
    crf = BackgroundJobs(crf_job, int(cfg.workers)) if preset.enabled and on_image is None else None
    crf_task = {"preset": preset, "bg": bg, "num_classes": model.num_classes}
    dataset = PyramidImages([it["id"] for it in todo], [str(it["image"]) for it in todo],
                            [it["label"] for it in todo], recipe["scales"], recipe["resize"])
    sampler = SizeBatchSampler([image_size(str(it["image"])) for it in todo], int(cfg.batch_size))
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=int(cfg.loader_workers),
                        collate_fn=collate_pyramids, pin_memory=device.type == "cuda")
    image_of = {it["id"]: str(it["image"]) for it in todo}
    try:
        with tqdm(total=len(todo), desc="infer", unit="img", disable=not cfg.progress) as bar:
            for batch in loader:
                inputs = [x.to(device, non_blocking=True) for x in batch["inputs"]]
                with autocast(device, cfg.precision):
                    agg = aggregate_raw_scores(model, inputs, batch["size"], bool(recipe["flip"]),
                                               channels_last=bool(cfg.get("channels_last")), output=output)
                agg = agg.float()
                fg = model.foreground_scores(agg, output).float().cpu().numpy()
                labels = image_labels(model, recipe, inputs, batch, agg, output)
                for i, name in enumerate(batch["name"]):
                    if on_image is not None:
                        on_image(name, labels[i], fg[i])
                        continue
                    write_image_outputs(model, recipe, name, labels[i], agg[i], fg[i],
                                        outputs_of(dirs, name, scores_format), crf, dict(crf_task, image=image_of[name]),
                                        output)
                bar.update(len(batch["name"]))
    finally:
        if crf is not None:
            crf.close()
