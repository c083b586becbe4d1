"""W&B extras for training: per-class IoU table and image / GT / prediction overlays."""
from __future__ import annotations

import numpy as np
import pytorch_lightning as pl

from wsss.data.formats import voc_palette
from wsss.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def denormalize(image) -> np.ndarray:
    """3xHxW normalised tensor -> HxWx3 uint8."""
    img = image.float().cpu().numpy().transpose(1, 2, 0) * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)
    return (img.clip(0, 1) * 255).astype(np.uint8)


def colorize(label: np.ndarray) -> np.ndarray:
    palette = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)
    return palette[np.asarray(label, dtype=np.int64).clip(0, 255)]


def overlay_row(image, gt, pred, alpha: float = 0.5) -> np.ndarray:
    """image | image+GT | image+prediction, side by side."""
    img = denormalize(image)
    blend = lambda lab: (img * (1 - alpha) + colorize(lab) * alpha).astype(np.uint8)  # noqa: E731
    return np.concatenate([img, blend(gt.numpy()), blend(pred.numpy())], axis=1)


class WandbValidationImages(pl.Callback):
    """Logs what the validation saw, so a run can be judged at a glance on the dashboard."""

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        from pytorch_lightning.loggers import WandbLogger

        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        import wandb

        run = loggers[0].experiment
        metrics = getattr(pl_module, "last_val_metrics", {}) or {}
        table = wandb.Table(columns=["class", "IoU", "precision", "recall"])
        for name, iou in (metrics.get("IoU") or {}).items():
            table.add_data(name, iou, metrics["precision"].get(name), metrics["recall"].get(name))
        images = [wandb.Image(overlay_row(e["image"], e["gt"], e["pred"]), caption=e["name"])
                  for e in getattr(pl_module, "_val_examples", [])]
        run.log({"val/per_class": table, "val/overlays": images, "trainer/global_step": trainer.global_step})
