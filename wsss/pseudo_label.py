"""``python -m wsss.pseudo_label``: score maps -> background rule -> dense CRF -> pseudo-label PNGs.

    python -m wsss.pseudo_label scores_dir=DIR [out_dir=OUT] dataset=voc dataset.root=ROOT \
        split=train_aug bg.threshold=0.2 crf=NAME workers=N [overwrite=true] [logger=wandb]

Reads SEAM-style score dicts ``scores_dir/ID.npy`` (``{fg index k: HxW}`` for class ``k+1``,
what ``wsss.infer`` and the seed repos write) for every id of the split, adds the background
(``bg``, or the CRF preset's own rule), refines with the ``crf`` preset (``conf/crf/``; ``none``
skips it), and writes the argmax as a VOC palette PNG ``out_dir/ID.png``, atomically. A rerun
skips PNGs that exist (``overwrite=true`` redoes them). When GT masks exist for the split, the
mIoU (both conventions) is printed and written to ``metrics.json`` in the run dir and out_dir.
``out_dir`` defaults to ``pseudo_labels/`` inside the Hydra run dir, so each run of a ``-m``
sweep writes its own folder.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from wsss.data.formats import (atomic_write_bytes, load_score_dict, read_image, read_label_png,
                               write_label_png)
from wsss.data.voc import VOCLayout
from wsss.metrics.confusion import confusion_matrix_np, scores_from_confusion
from wsss.paths import config_dir
from wsss.postprocess.crf import Background, CRFPreset, refine, worker_pool

log = logging.getLogger(__name__)


# ----- one image (runs in worker processes) --------------------------------------------------
def label_one(task: dict) -> tuple:
    """Write (or keep) one pseudo label; return ``(id, status, confusion or None)``."""
    out = Path(task["out"])
    gt = None
    if task["gt"] is not None:
        gt = read_label_png(task["gt"], task["num_classes"])
    if out.is_file() and not task["overwrite"]:
        status = "kept"
        label = read_label_png(out, task["num_classes"]) if gt is not None else None
    else:
        image = read_image(task["image"])
        shape = image.shape[:2]
        scores = load_score_dict(task["scores"], shape=shape, num_fg=task["num_classes"] - 1)
        keys = sorted(scores)
        fg = np.stack([scores[k] for k in keys]) if keys else np.zeros((0,) + shape, np.float32)
        if not np.isfinite(fg).all():
            raise ValueError(f"{task['scores']}: score maps contain NaN or inf; re-run inference")
        try:
            label = refine(image, fg, keys, task["preset"], task["bg"], task["num_classes"])
        except ValueError as exc:
            raise ValueError(f"{task['scores']}: {exc}") from exc
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
def check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PermissionError(f"out_dir {out_dir} cannot be written ({exc.strerror or exc}); "
                              "pass out_dir=<a writable folder>") from exc


def check_scores(scores_dir: Path, ids: Sequence[str]) -> None:
    """All missing score files at once, so a wrong folder or split is fixed in one go."""
    if not scores_dir.is_dir():
        raise FileNotFoundError(f"scores_dir {scores_dir} is not a directory; pass scores_dir=<folder of ID.npy "
                                "score dicts> (what `python -m wsss.infer` writes under OUT/scores)")
    missing = [i for i in ids if not (scores_dir / f"{i}.npy").is_file()]
    if missing:
        shown = ", ".join(str(scores_dir / f"{i}.npy") for i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(f"{len(missing)} of {len(ids)} score files missing: {shown}{more}; "
                                "run inference on this split or pick the split the scores were made for")


def class_config(cfg) -> tuple[int, List[str]]:
    ds = cfg.get("dataset") or {}
    names = ds.get("class_names")
    num = int(ds.get("num_classes") or (len(names) if names else 21))
    names = [str(n) for n in names] if names else [str(i) for i in range(num)]
    if len(names) != num:
        raise ValueError(f"dataset.num_classes={num} but dataset.class_names has {len(names)} entries")
    return num, names


def dataset_layout(cfg) -> VOCLayout:
    ds = cfg.dataset
    root = ds.get("root")
    if root in (None, "", "???"):
        raise ValueError("dataset.root=... is required (the VOC-layout folder holding JPEGImages/)")
    if ds.get("synthetic"):
        from wsss.data.synthetic import ensure_synthetic_voc

        ensure_synthetic_voc(root, **OmegaConf.to_container(ds.synthetic, resolve=True))
    return VOCLayout(root, packaged_fallback=bool(ds.get("packaged_lists", False)))


# ----- running -------------------------------------------------------------------------------
def _results(tasks: List[dict], workers: int, progress: bool):
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), desc="pseudo_label", unit="img", dynamic_ncols=True)
    pool = worker_pool(workers) if len(tasks) > 1 else None
    try:
        results = map(label_one, tasks) if pool is None else pool.imap_unordered(
            label_one, tasks, chunksize=max(1, min(16, len(tasks) // (8 * workers))))
        for res in results:
            if bar:
                bar.update(1)
            yield res
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if bar:
            bar.close()


def make_pseudo_labels(layout: VOCLayout, split: str, scores_dir, out_dir, preset: CRFPreset,
                       bg: Optional[Background], num_classes: int, class_names: Sequence[str],
                       workers: int = 0, overwrite: bool = False, gt_dir: Optional[str] = None,
                       progress: bool = False) -> dict:
    """Write the pseudo labels of ``split``; return counts and, with GT, the metrics."""
    scores_dir, out_dir = Path(scores_dir), Path(out_dir)
    ids = layout.split_ids(split)
    check_scores(scores_dir, ids)
    check_writable(out_dir)
    gt_folder = layout.mask_dir(split, gt_dir)
    tasks = []
    for i in ids:
        gt = gt_folder / f"{i}.png"
        tasks.append({"id": i, "image": str(layout.image_path(i)), "scores": str(scores_dir / f"{i}.npy"),
                      "out": str(out_dir / f"{i}.png"), "gt": str(gt) if gt.is_file() else None,
                      "preset": preset, "bg": bg, "num_classes": num_classes, "overwrite": overwrite})
    conf = np.zeros((num_classes, num_classes), np.int64)
    counts = {"written": 0, "kept": 0}
    scored = 0
    for _, status, c in _results(tasks, workers, progress):
        counts[status] += 1
        if c is not None:
            conf += c
            scored += 1
    rule = _background_summary(preset, bg)
    res: Dict[str, object] = {"split": split, "scores_dir": str(scores_dir), "out_dir": str(out_dir),
                              "num_images": len(ids), "written": counts["written"], "kept": counts["kept"],
                              "crf": preset.name, "background": rule, "gt_dir": str(gt_folder),
                              "num_scored": scored, "num_classes": num_classes, "class_names": list(class_names)}
    if scored:
        res.update(scores_from_confusion(conf, class_names))
        res["confusion"] = conf.tolist()
        res["threshold"] = rule["threshold"] if rule["rule"] == "threshold" else None
    return res


def _background_summary(preset: CRFPreset, bg: Optional[Background]) -> dict:
    own = preset.enabled and preset.background is not None
    rule = preset.background if own else bg
    out = {"rule": rule.rule, "threshold": rule.threshold, "alpha": rule.alpha,
           "from": f"crf preset '{preset.name}'" if own else "bg"}
    if rule.rule == "power":
        out["threshold"] = None
    else:
        out["alpha"] = None
    return out


def format_report(res: dict) -> str:
    lines = [f"pseudo labels: {res['written']} written, {res['kept']} kept (already there) -> {res['out_dir']}",
             f"crf={res['crf']}  background: {res['background']}"]
    if not res["num_scored"]:
        lines.append(f"no GT masks in {res['gt_dir']}: no mIoU reported")
        return "\n".join(lines)
    names = res["class_names"]
    width = max(11, max(len(n) for n in names))
    pct = lambda x: "    n/a" if x is None else f"{100.0 * x:7.3f}"  # noqa: E731
    lines.append(f"{'class':>{width}}     IoU  IoU(SEAM)  precision  recall")
    for n in names:
        lines.append(f"{n:>{width}} {pct(res['IoU'][n])}   {pct(res['IoU_seam'][n])}"
                     f"    {pct(res['precision'][n])} {pct(res['recall'][n])}")
    lines.append(f"GT for {res['num_scored']} of {res['num_images']} images ({res['gt_dir']})")
    lines.append(f"mIoU (SEAM, mean over all {len(names)}): {100 * res['mIoU_seam']:.3f}%")
    lines.append(f"mIoU (classes present in GT or prediction): {100 * res['mIoU']:.3f}%")
    return "\n".join(lines)


def write_metrics(res: dict, paths: Sequence[Path]) -> List[str]:
    data = (json.dumps(res, indent=1) + "\n").encode()
    written = []
    for p in paths:
        if p is not None and str(p) not in written:
            atomic_write_bytes(p, data)
            written.append(str(p))
    return written


def log_wandb(logger_cfg, res: dict, layout: VOCLayout, ids: Sequence[str], count: int) -> None:
    """Per-class table and an image / GT / pseudo-label grid to the W&B run of ``logger=wandb``."""
    from hydra.utils import instantiate
    from pytorch_lightning.loggers import WandbLogger

    loggers = [instantiate(c) for c in (logger_cfg or {}).values() if c is not None]
    wandb_loggers = [lg for lg in loggers if isinstance(lg, WandbLogger)]
    if not wandb_loggers:
        return
    import wandb

    from wsss.viz.overlay import overlay_grid

    run = wandb_loggers[0].experiment
    payload: Dict[str, object] = {}
    if res["num_scored"]:
        table = wandb.Table(columns=["class", "IoU", "IoU_seam", "precision", "recall"])
        for n in res["class_names"]:
            table.add_data(n, res["IoU"][n], res["IoU_seam"][n], res["precision"][n], res["recall"][n])
        payload.update({"pseudo/per_class": table, "pseudo/mIoU": res["mIoU"], "pseudo/mIoU_seam": res["mIoU_seam"]})
        run.summary["pseudo/mIoU_seam"] = res["mIoU_seam"]
    if count > 0:
        gt_folder, n = Path(res["gt_dir"]), res["num_classes"]
        images, gts, preds = [], [], []
        for i in list(ids)[:count]:
            images.append(read_image(layout.image_path(i)))
            gt = gt_folder / f"{i}.png"
            gts.append(read_label_png(gt, n) if gt.is_file() else None)
            preds.append(read_label_png(Path(res["out_dir"]) / f"{i}.png", n))
        payload["pseudo/overlays"] = wandb.Image(overlay_grid(images, gts, preds, max_rows=count),
                                                 caption="image | GT | pseudo label")
    run.log(payload)
    wandb.finish()


def run(cfg) -> dict:
    """The CLI without Hydra's decorator (callable from tests and other entry points)."""
    for key in ("scores_dir", "out_dir", "split"):
        if cfg.get(key) in (None, "", "???"):
            raise ValueError(f"{key}=... is required: python -m wsss.pseudo_label scores_dir=DIR "
                             "dataset.root=ROOT split=SPLIT [out_dir=OUT] [crf=NAME]")
    num_classes, names = class_config(cfg)
    preset = CRFPreset.from_config(cfg.get("crf"))
    bg = Background.from_config(cfg.get("bg"))
    if preset.enabled and preset.background is not None and bg is not None and bg != preset.background:
        log.info("crf=%s brings its own background rule %s; bg=%s is not used (crf.background=null to use it)",
                 preset.name, preset.background, bg)
    layout = dataset_layout(cfg)
    res = make_pseudo_labels(layout, cfg.split, cfg.scores_dir, cfg.out_dir, preset, bg, num_classes, names,
                             workers=int(cfg.get("workers", 0)), overwrite=bool(cfg.get("overwrite", False)),
                             gt_dir=cfg.get("gt_dir"), progress=bool(cfg.get("progress", True)))
    print(format_report(res), flush=True)
    targets = [Path(cfg.metrics_file) if cfg.get("metrics_file") else None, Path(cfg.out_dir) / "metrics.json"]
    print("wrote " + ", ".join(write_metrics(res, targets)), flush=True)
    if cfg.get("logger"):
        log_wandb(cfg.logger, res, layout, layout.split_ids(cfg.split), int(cfg.get("overlay_count", 8)))
    return res


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="pseudo_label")
def main(cfg: DictConfig) -> float:
    res = run(cfg)
    return float(res.get("mIoU_seam", float("nan")))


if __name__ == "__main__":
    main()
