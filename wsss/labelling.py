"""``wsss.pseudo_label`` as a library: score maps -> background rule -> dense CRF -> pseudo-label PNGs, with
their settings record, metrics and W&B overlays (:func:`run`)."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from wsss.classes import FIX as CLASSES_FIX
from wsss.classes import check_root_classes, class_config
from wsss.data.formats import load_score_dict, read_image, read_label_png, score_file, write_label_png
from wsss.data.layout import Layout, layout_from_config
from wsss.distributed import barrier, is_main, local_device, shard, sum_over_ranks
from wsss.inference.runner import infer_images
from wsss.metrics.confusion import confusion_matrix_np, scores_from_confusion
from wsss.outputs import check_writable, claim_output_dir, output_dir, write_effective_config
from wsss.postprocess.background import Background
from wsss.provenance import RunRecord
from wsss.postprocess.crf import CRFPreset, refine
from wsss.reporting import (background_protocol, echo, format_table, metrics_record, named_metrics, protocol,
                            value_line, write_metrics)
from wsss.workers import map_tasks

log = logging.getLogger("wsss.pseudo_label")  # not __main__ under python -m


# ----- one image (runs in worker processes) --------------------------------------------------
def label_one(task: dict) -> tuple:
    """Write (or keep) one pseudo label; return ``(id, status, confusion or None)``."""
    out = Path(task["out"])
    gt = None
    if task["gt"] is not None:
        try:
            gt = read_label_png(task["gt"], task["num_classes"])
        except ValueError as exc:
            raise ValueError(f"{exc}; the GT was made for more classes than the config's {task['num_classes']}: "
                             f"{CLASSES_FIX}") from exc
    if out.is_file() and not task["overwrite"]:
        status = "kept"
        label = read_label_png(out, task["num_classes"]) if gt is not None else None
    else:
        image = read_image(task["image"])
        shape = image.shape[:2]
        scores = task["scores"] if isinstance(task["scores"], dict) else load_score_dict(task["scores"], shape=shape)
        keys = sorted(scores)
        num_fg = task["num_classes"] - 1
        if keys and not 0 <= keys[0] <= keys[-1] < num_fg:
            raise ValueError(f"{task['where']}: class index {keys[-1] if keys[-1] >= num_fg else keys[0]} but the "
                             f"config has {task['num_classes']} classes (indices 0..{num_fg - 1}); the scores were "
                             f"made for another data set: {CLASSES_FIX}")
        fg = np.stack([scores[k] for k in keys]) if keys else np.zeros((0,) + shape, np.float32)
        if not np.isfinite(fg).all():
            raise ValueError(f"{task['where']}: score maps contain NaN or inf; re-run inference")
        try:
            label = refine(image, fg, keys, task["preset"], task["bg"], task["num_classes"])
        except ValueError as exc:
            raise ValueError(f"{task['where']}: {exc}") from exc
        write_label_png(out, label)
        status = "written"
    conf = None
    if gt is not None:
        if label.shape != gt.shape:
            raise ValueError(f"{task['gt']}: GT is {gt.shape[0]}x{gt.shape[1]} but the pseudo label {out} is "
                             f"{label.shape[0]}x{label.shape[1]}")
        conf = confusion_matrix_np(np.array(label), np.array(gt), task["num_classes"])
    return task["id"], status, conf


# ----- checks --------------------------------------------------------------------------------
def check_scores(scores_dir: Path, ids: Sequence[str]) -> None:
    """All missing score files at once, so a wrong folder or split is fixed in one go."""
    if not scores_dir.is_dir():
        raise FileNotFoundError(f"scores_dir {scores_dir} is not a directory; pass scores_dir=<folder of ID.npy "
                                "score dicts> (what `python -m wsss.infer` writes under OUT/scores)")
    missing = [i for i in ids if not score_file(scores_dir, i).is_file()]
    if missing:
        shown = ", ".join(str(scores_dir / f"{i}.npy") for i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(f"{len(missing)} of {len(ids)} score files missing: {shown}{more}; "
                                "run inference on this split or pick the split the scores were made for")


def dataset_layout(cfg) -> Layout:
    """The layout of ``cfg.dataset`` (any data set), a configured synthetic set written first."""
    return layout_from_config(cfg.dataset, prepare=True)


# ----- running -------------------------------------------------------------------------------
def labelling_settings(layout: Layout, split: str, scores_dir, preset: CRFPreset, bg: Optional[Background],
                       num_classes: int, class_names: Sequence[str]) -> dict:
    """What determines the PNGs (``settings.json``): a rerun keeps existing ones only when this is equal."""
    crf = dataclasses.asdict(preset)
    crf.pop("source", None)
    if crf.get("image") == "original":  # the default: settings of earlier runs stay equal
        crf.pop("image")
    return {"tool": "pseudo_label", "scores_dir": str(Path(scores_dir).expanduser().absolute()), "split": split,
            "dataset_root": str(layout.root.absolute()), "num_classes": num_classes,
            "class_names": list(class_names), "background": background_summary(preset, bg), "crf": crf}


def make_pseudo_labels(layout: Layout, split: str, scores_dir, out_dir, preset: CRFPreset,
                       bg: Optional[Background], num_classes: int, class_names: Sequence[str],
                       workers: int = 0, overwrite: bool = False, gt_dir: Optional[str] = None,
                       progress: bool = False, record_settings: bool = True) -> dict:
    """Write the pseudo labels of ``split``; return counts and, with GT, the metrics.

    ``record_settings``: claim ``out_dir`` with :func:`wsss.outputs.claim_output_dir` first (a rerun resumes
    only with equal settings).
    """
    scores_dir, out_dir = Path(scores_dir), Path(out_dir)
    ids = layout.split_ids(split)
    check_scores(scores_dir, ids)
    check_writable(out_dir)
    if record_settings and is_main():
        has_outputs = any((out_dir / f"{i}.png").is_file() for i in ids)
        claim_output_dir(out_dir, labelling_settings(layout, split, scores_dir, preset, bg, num_classes,
                                                     class_names), overwrite, has_outputs)
    barrier()  # under torchrun: settings claimed before any rank writes; each rank labels its share below
    gt_folder = layout.mask_dir(split, gt_dir)
    tasks = [label_task(i, layout.image_path(i), str(score_file(scores_dir, i)), out_dir, gt_folder, preset, bg,
                        num_classes, overwrite) for i in shard(ids)]
    results = map_tasks(label_one, tasks, workers, progress, "pseudo_label", ordered=False)
    return labelling_result(results, split, str(scores_dir), out_dir, len(ids), preset, bg, gt_folder,
                            num_classes, class_names)


def label_task(image_id: str, image, scores, out_dir: Path, gt_folder: Path, preset: CRFPreset,
               bg: Optional[Background], num_classes: int, overwrite: bool, where: Optional[str] = None) -> dict:
    """One :func:`label_one` job; ``scores`` is a score file, a ``{class: map}`` dict (fused) or None (kept)."""
    gt = gt_folder / f"{image_id}.png"
    return {"id": image_id, "image": str(image), "scores": scores, "where": where or str(scores),
            "out": str(out_dir / f"{image_id}.png"), "gt": str(gt) if gt.is_file() else None, "preset": preset,
            "bg": bg, "num_classes": num_classes, "overwrite": overwrite}


def labelling_result(results, split: str, source: str, out_dir: Path, num_images: int, preset: CRFPreset,
                     bg: Optional[Background], gt_folder: Path, num_classes: int, class_names: Sequence[str]) -> dict:
    """Counts and, with GT, metrics of :func:`label_one`'s results, summed over torchrun ranks (exact)."""
    conf = np.zeros((num_classes, num_classes), np.int64)
    counts = {"written": 0, "kept": 0}
    scored = 0
    for _, status, c in results:
        counts[status] += 1
        if c is not None:
            conf += c
            scored += 1
    conf, totals = sum_over_ranks(conf, [counts["written"], counts["kept"], scored])
    counts["written"], counts["kept"], scored = totals
    rule = background_summary(preset, bg)
    res: Dict[str, object] = {"split": split, "scores_dir": source, "out_dir": str(out_dir),
                              "num_images": num_images, "written": counts["written"], "kept": counts["kept"],
                              "crf": preset.name, "background": rule, "gt_dir": str(gt_folder),
                              "num_scored": scored, "num_classes": num_classes, "class_names": list(class_names)}
    if scored:
        res.update(scores_from_confusion(conf, class_names))
        res["confusion"] = conf.tolist()
        res["threshold"] = rule["threshold"]
    return res


def fused_pseudo_labels(model, cfg, layout: Layout, out_dir: Path, preset: CRFPreset, bg: Optional[Background],
                        num_classes: int, class_names: Sequence[str]) -> dict:
    """``ckpt=`` instead of ``scores_dir=``: inference and labelling image by image, no score maps written.

    Each image's scores are what ``wsss.infer`` would store (the method's inference recipe, its stored classes),
    handed to :func:`label_one` in memory, so the labels equal the two-step path's."""
    from wsss.inference.device import pick_device
    from wsss.inference.runner import resolve_recipe, stored_classes
    from wsss.inference.split import split_items
    from wsss.outputs import fingerprint
    from wsss.workers import BackgroundJobs

    split, overwrite = str(cfg.split), bool(cfg.get("overwrite", False))
    device = pick_device(local_device(str(cfg.device)))
    model = model.to(device).eval()
    recipe = resolve_recipe(model, cfg)
    items = split_items(cfg.dataset, split, num_classes)
    if is_main():
        settings = labelling_settings(layout, split, "(fused)", preset, bg, num_classes, class_names)
        settings.update(scores_dir=None, ckpt=fingerprint(cfg.ckpt),
                        inference={k: recipe[k] for k in ("scales", "flip", "resize", "classes")})
        claim_output_dir(out_dir, settings, overwrite, any((out_dir / f"{it['id']}.png").is_file() for it in items))
    barrier()
    gt_folder = layout.mask_dir(split, cfg.get("gt_dir"))
    mine = shard(items)

    def task(it: dict, scores) -> dict:
        return label_task(it["id"], it["image"], scores, out_dir, gt_folder, preset, bg, num_classes, overwrite,
                          where=f"{cfg.ckpt} on {it['id']}")

    jobs = BackgroundJobs(label_one, int(cfg.get("workers", 0)))
    todo = []
    for it in mine:
        if not overwrite and (out_dir / f"{it['id']}.png").is_file():
            jobs.submit(task(it, None))  # kept: scored against its GT, not recomputed
        else:
            todo.append(it)
    by_id = {it["id"]: it for it in todo}

    def on_image(name, label, fg):
        keys = stored_classes(label, recipe["classes"], fg.shape[0])
        jobs.submit(task(by_id[name], {k: fg[k] for k in keys}))

    try:
        infer_images(model, todo, recipe, CRFPreset(name="none"), {}, device, cfg, on_image=on_image)
    finally:
        jobs.close()
    return labelling_result(jobs.results, split, f"(fused) {cfg.ckpt}", out_dir, len(items), preset, bg,
                            gt_folder, num_classes, class_names)


def background_summary(preset: CRFPreset, bg: Optional[Background]) -> dict:
    """The rule that made the background (:func:`wsss.reporting.background_protocol`): the preset's own, or ``bg``."""
    own = preset.enabled and preset.background is not None
    rule = preset.background if own else bg
    return background_protocol(rule.rule, rule.threshold, rule.alpha, chosen="fixed",
                               source=f"crf preset '{preset.name}'" if own else "bg")


def format_report(res: dict) -> str:
    b = res["background"]
    value = (f"threshold={b['threshold']:g}" if b["rule"] == "threshold" else
             f"alpha={b['alpha']:g}" if b["rule"] == "power" else "(predicted)")
    lines = [f"pseudo labels: {res['written']} written, {res['kept']} kept (already there) -> {res['out_dir']}",
             f"crf={res['crf']}  background: {b['rule']} {value} (from {b['source']})"]
    if not res["num_scored"]:
        lines.append(f"no GT masks in {res['gt_dir']}: no mIoU reported")
        return "\n".join(lines)
    lines.append(f"GT for {res['num_scored']} of {res['num_images']} images ({res['gt_dir']})")
    lines.append(format_table(res, res["split"]))
    return "\n".join(lines)


def labelling_record(res: dict) -> dict:
    """``res`` in the one ``metrics.json`` schema (:func:`wsss.reporting.metrics_record`)."""
    split = res["split"]
    details = {k: res[k] for k in ("written", "kept", "confusion") if k in res}
    return metrics_record("pseudo_label", split, protocol(crf=res["crf"], background=res["background"]),
                          named_metrics(res, split), num_images=res["num_images"], num_scored=res["num_scored"],
                          class_names=res["class_names"],
                          inputs={"scores_dir": res["scores_dir"], "gt_dir": res["gt_dir"], "out_dir": res["out_dir"]},
                          details=details)


def log_wandb(logger_cfg, res: dict, layout: Layout, ids: Sequence[str], count: int,
              record: Optional[dict] = None) -> None:
    """Per-class table and an image / GT / pseudo-label grid to the W&B run of ``logger=wandb``."""
    from wsss.tool_wandb import open_run, per_class_table

    run = open_run(logger_cfg, record, [f"split={res['split']}"])
    if run is None:
        return
    import wandb

    from wsss.viz.overlay import overlay_grid

    payload: Dict[str, object] = {}
    if res["num_scored"]:
        split = res["split"]
        payload.update({f"{split}/per_class": per_class_table(res), f"{split}/mIoU": res["mIoU"],
                        f"{split}/mIoU_seam": res["mIoU_seam"]})
        run.summary[f"{split}/mIoU"] = res["mIoU"]
        run.summary[f"{split}/mIoU_seam"] = res["mIoU_seam"]
    if count > 0:
        gt_folder, n = Path(res["gt_dir"]), res["num_classes"]
        images, gts, preds = [], [], []
        for i in list(ids)[:count]:
            images.append(read_image(layout.image_path(i)))
            gt = gt_folder / f"{i}.png"
            gts.append(read_label_png(gt, n) if gt.is_file() else None)
            preds.append(read_label_png(Path(res["out_dir"]) / f"{i}.png", n))
        payload[f"{res['split']}/overlays"] = wandb.Image(overlay_grid(images, gts, preds, max_rows=count),
                                                 caption="image | GT | pseudo label")
    run.log(payload)
    wandb.finish()


def run(cfg, model=None) -> dict:
    """The CLI without Hydra's decorator (callable from tests and other entry points); with ``model`` (the
    entry point's ``ckpt=``), fused: inference and labelling together (:func:`fused_pseudo_labels`)."""
    refine = str((cfg.get("refine") or {}).get("name") or "none")
    if refine != "none" and model is None:
        raise ValueError(f"refine={refine} needs the model: pass ckpt=CKPT (a wsss checkpoint, or an authors' release "
                         "with method=NAME) instead of scores_dir=")
    for key in (("split",) if model is not None else ("scores_dir", "split")):
        if cfg.get(key) in (None, "", "???"):
            raise ValueError(f"{key}=... is required: python -m wsss.pseudo_label scores_dir=DIR (or ckpt=CKPT) "
                             "dataset.root=ROOT split=SPLIT [out_dir=OUT] [crf=NAME]")
    num_classes, names = class_config(cfg)
    preset = CRFPreset.from_config(cfg.get("crf"))
    bg = Background.from_config(cfg.get("bg"))
    if refine == "none" and preset.enabled and preset.background is not None and bg is not None \
            and bg != preset.background:
        log.info("crf=%s brings its own background rule %s; bg=%s is not used (crf.background=null to use it)",
                 preset.name, preset.background, bg)
    layout = dataset_layout(cfg)
    check_root_classes(layout.root, num_classes, names, f"the config (dataset.num_classes={num_classes})")
    out_dir = output_dir(cfg)
    check_writable(out_dir)  # the clear error first, before run.json is written there
    record = None if not is_main() else RunRecord.start_tool(out_dir, "pseudo_label", details={
        "scores_dir": cfg.get("scores_dir"), "ckpt": cfg.get("ckpt") if model is not None else None,
        "split": str(cfg.split), "crf": preset.name})
    if refine != "none":
        from wsss.random_walk_labelling import random_walk_pseudo_labels

        res = random_walk_pseudo_labels(model, cfg, layout, out_dir, preset, num_classes, names)
    elif model is not None:
        res = fused_pseudo_labels(model, cfg, layout, out_dir, preset, bg, num_classes, names)
    else:
        res = make_pseudo_labels(layout, cfg.split, cfg.scores_dir, out_dir, preset, bg, num_classes, names,
                                 workers=int(cfg.get("workers", 0)), overwrite=bool(cfg.get("overwrite", False)),
                                 gt_dir=cfg.get("gt_dir"), progress=bool(cfg.get("progress", True)))
    if not is_main():  # under torchrun: rank 0 alone reports and writes the records
        return res
    echo(format_report(res), logger=log)
    written = [str(write_effective_config(out_dir, cfg, {"out_dir": str(out_dir), "bg": {
        k: res["background"][k] for k in ("rule", "threshold", "alpha")},
                                                         "dataset.num_classes": num_classes,
                                                         "dataset.class_names": names}))]
    if res["num_scored"]:
        written.append(str(write_metrics(out_dir / "metrics.json", labelling_record(res))))
    echo("wrote " + ", ".join(written), logger=log)
    record.finish(background=res["background"], images=res.get("num_images"))
    if cfg.get("logger"):
        log_wandb(cfg.logger, res, layout, layout.split_ids(cfg.split), int(cfg.get("overlay_count", 8)),
                  record.record)
    if res["num_scored"]:
        echo(value_line(f"{res['split']}/mIoU", res["mIoU"]), logger=log)
    return res
