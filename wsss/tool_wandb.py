"""The W&B run of a post-training tool (``logger=wandb`` of infer, evaluate, pseudo_label).

One place that opens it, so every tool's run carries the same fields as its ``run.json`` (config) and its tool,
method and split as tags, and the per-class table is written one way.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence


def open_run(logger_cfg, record: Optional[Mapping] = None, tags: Sequence[str] = ()):
    """The wandb run of ``logger_cfg`` (None when it configures no W&B logger), with ``record`` as config."""
    from hydra.utils import instantiate
    from pytorch_lightning.loggers import WandbLogger

    loggers = [instantiate(c) for c in (logger_cfg or {}).values() if c is not None]
    wandb_loggers = [lg for lg in loggers if isinstance(lg, WandbLogger)]
    if not wandb_loggers:
        return None
    run = wandb_loggers[0].experiment
    if record is not None:
        run.config.update({"wsss_run": dict(record)}, allow_val_change=True)
        tags = [f"tool={record.get('tool')}", *tags]
    run.tags = tuple(sorted(set(run.tags or ()) | {str(t) for t in tags if t}))
    return run


def per_class_table(res: Mapping):
    """IoU, SEAM IoU, precision and recall per class of a result dict."""
    import wandb

    table = wandb.Table(columns=["class", "IoU", "IoU_seam", "precision", "recall"])
    for name in res["class_names"]:
        table.add_data(name, res["IoU"][name], res["IoU_seam"][name], res["precision"][name], res["recall"][name])
    return table


def panel_images(examples: Optional[Mapping]) -> dict:
    """``{"worst_images": [...], "best_images": [...]}`` of :func:`wsss.evaluation.examples.write_examples`."""
    import wandb

    out = {}
    for tag in ("worst", "best"):
        shown = [wandb.Image(panel, caption=f"{tag}: {name}") for t, name, _, panel in (examples or {}).get("panels", [])
                 if t == tag]
        if shown:
            out[f"{tag}_images"] = shown
    return out
