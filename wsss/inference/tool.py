"""``wsss.infer`` as a library: :func:`run` infers a split with a loaded model and writes its outputs, settings
and metrics (the entry point only loads the model from the command line)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional

from omegaconf import DictConfig

from wsss.classes import check_model_classes
from wsss.data.formats import SCORE_FORMATS
from wsss.distributed import barrier, local_device, shard, world
from wsss.inference.device import pick_device
from wsss.inference.runner import (has_outputs, infer_images, inference_settings, outputs_of,
                                   prepare_out_dirs, preset_settings, resolve_recipe)
from wsss.inference.split import SplitItem, split_items
from wsss.methods.registry import tool_owners
from wsss.outputs import claim_output_dir, output_dir, write_effective_config
from wsss.provenance import RunRecord, checkpoint_facts
from wsss.reporting import (background_protocol, echo, format_table, metrics_record, named_metrics, protocol,
                            value_line, write_metrics)

log = logging.getLogger("wsss.infer")  # not __main__ under python -m


def run(cfg: DictConfig, model=None) -> dict:
    """Infer every image of ``cfg.split``; returns ``{"pred": metrics, "crf": metrics}`` (empty without GT)."""
    from wsss.postprocess.crf import CRFPreset, load_preset

    for key in tool_owners():  # a method's extra tools (e.g. a retrieval memory), for a checkpoint or a release
        if cfg.get(key):
            model.use_tool(key, str(cfg[key]))
    check_model_classes(cfg.dataset, model.num_classes, model.class_names)
    device = pick_device(local_device(str(cfg.device)))
    model = model.to(device).eval()
    if cfg.get("channels_last"):
        import torch

        model = model.to(memory_format=torch.channels_last)
    recipe = resolve_recipe(model, cfg)
    preset = CRFPreset.from_config(cfg.crf) if cfg.get("crf") is not None else load_preset(recipe["crf"])
    out_dir = output_dir(cfg)
    dirs = prepare_out_dirs(out_dir, preset.enabled)
    items = split_items(cfg.dataset, str(cfg.split), model.num_classes)
    fmt = str(cfg.get("scores_format") or "npy")
    if fmt not in SCORE_FORMATS:
        raise ValueError(f"scores_format={fmt}; use one of {sorted(SCORE_FORMATS)}")
    rank, ranks = world()  # under torchrun: every rank its share of the images, rank 0 the records and metrics
    if rank == 0:
        claim_output_dir(out_dir, inference_settings(cfg, model, recipe, preset), bool(cfg.overwrite),
                         has_outputs(out_dir))
    barrier()  # the settings are claimed (or refused) before any rank writes an image
    record = RunRecord.start_tool(out_dir, "infer", details={
        "checkpoint": checkpoint_facts(cfg.ckpt), "method": model.method_name, "split": str(cfg.split),
        "labels_restrict_prediction": bool(recipe["pred_with_labels"]), "ranks": ranks}) if rank == 0 else None
    todo = [it for it in shard(items)
            if cfg.overwrite or not all(p.is_file() for p in outputs_of(dirs, it["id"], fmt).values())]
    log.info("%d images in split '%s'%s, %d to do -> %s", len(items), cfg.split,
             f" (rank {rank} of {ranks}: every {ranks}th)" if ranks > 1 else "", len(todo), out_dir)
    infer_images(model, todo, recipe, preset, dirs, device, cfg)
    barrier()  # every rank's files are written: rank 0 scores the whole folder
    if rank != 0:
        return {}
    effective = {"out_dir": str(out_dir), **{k: recipe[k] for k in ("scales", "flip", "resize", "classes",
                                                                    "pred_with_labels")},
                 "crf": {"name": preset.name, **preset_settings(preset)}, "bg": dict(model.bg)}
    written = [str(write_effective_config(out_dir, cfg, effective))]
    metrics, examples = report(cfg, items, dirs, model, out_dir, recipe, preset)
    if metrics:
        written.append(str(out_dir / "metrics.json"))
    echo(f"outputs: {out_dir} (wrote {', '.join(written)})", logger=log)
    record.finish(images=len(items), metrics_file=str(out_dir / "metrics.json") if metrics else None)
    if cfg.get("logger"):
        log_wandb(cfg.logger, str(cfg.split), metrics, model.class_names, record.record, examples)
    if "pred" in metrics:
        echo(value_line(f"{cfg.split}/mIoU", metrics["pred"]["mIoU"]), logger=log)
    return metrics


def report(cfg, items: List[SplitItem], dirs: Dict[str, Path], model, out_dir: Path, recipe: dict, preset) -> dict:
    """mIoU of pred (and crf) PNGs when every image has GT; printed and written to ``OUT/metrics.json``."""
    from wsss.metrics.folders import evaluate_dir

    if not items or any(it["gt"] is None for it in items):
        echo("no GT masks for every image of the split: mIoU not computed", logger=log)
        return {}, None
    gt_dirs = {Path(it["gt"]).parent for it in items}
    if len(gt_dirs) != 1:
        return {}, None
    gt_dir, ids, split = gt_dirs.pop(), [it["id"] for it in items], str(cfg.split)
    metrics, named = {}, {}
    for kind in ("pred", "crf"):
        if kind in dirs:
            res = evaluate_dir(dirs[kind], gt_dir, ids, "png", model.num_classes, model.class_names,
                               workers=max(1, int(cfg.workers)))
            output = None if kind == "pred" else "crf"
            prefix = "/".join(p for p in (split, output) if p)
            echo(f"== {kind}: {dirs[kind]} ==\n{format_table(res, prefix)}", logger=log)
            metrics[kind] = {k: res[k] for k in ("mIoU", "mIoU_seam", "pixel_acc", "IoU", "IoU_seam", "precision",
                                                 "recall", "confusion")}
            named.update(named_metrics(res, split, output))
    rule = model.bg.get("rule")
    bg = background_protocol(rule, model.bg.get("threshold"), model.bg.get("alpha"),
                             chosen="learned" if model.background.learned else "fixed",
                             source=f"method.bg ({model.method_name})")
    proto = protocol(recipe["scales"], bool(recipe["flip"]), recipe["resize"], preset.name, bg)
    details = {kind: {"dir": str(dirs[kind]), "confusion": m["confusion"]} for kind, m in metrics.items()}
    if "crf" in metrics and preset.background is not None:
        own = preset.background
        details["crf"]["background"] = background_protocol(own.rule, own.threshold, own.alpha,
                                                           source=f"crf preset '{preset.name}'")
    record = metrics_record("infer", split, proto, named, num_images=len(ids), num_scored=len(ids),
                            class_names=model.class_names, inputs={"ckpt": cfg.ckpt, "gt_dir": gt_dir},
                            details=details)
    write_metrics(out_dir / "metrics.json", record)
    examples = None
    if int(cfg.get("overlays") or 0) > 0:
        from wsss.evaluation.examples import write_examples

        examples = write_examples(out_dir, ids, dirs["pred"], gt_dir, "png", model.num_classes, model.class_names,
                                  int(cfg.overlays), image_of={it["id"]: Path(it["image"]) for it in items},
                                  scores_dir=dirs["scores"], crf_dir=dirs.get("crf"))
        echo(f"per-image mIoU: {examples['csv']}; worst / best panels: {out_dir / 'overlays'}", logger=log)
    return metrics, examples


def log_wandb(logger_cfg, split: str, metrics: dict, class_names, record: dict, examples: Optional[dict]) -> None:
    """Metrics, per-class tables (pred and crf) and the overlays=N panels to the W&B run of ``logger=wandb``."""
    from wsss.tool_wandb import open_run, panel_images, per_class_table

    run = open_run(logger_cfg, record, [f"split={split}", f"method={record['details'].get('method')}"])
    if run is None:
        return
    import wandb

    payload = {}
    for kind, m in metrics.items():
        prefix = split if kind == "pred" else f"{split}/crf"
        payload.update({f"{prefix}/mIoU": m["mIoU"], f"{prefix}/mIoU_seam": m["mIoU_seam"],
                        f"{prefix}/per_class": per_class_table({**m, "class_names": list(class_names)})})
        run.summary[f"{prefix}/mIoU"] = m["mIoU"]
    payload.update({f"{split}/{k}": v for k, v in panel_images(examples).items()})
    run.log(payload)
    wandb.finish()
