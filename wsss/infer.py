"""``python -m wsss.infer``: multi-scale + flip score maps, predictions and CRF labels for a split.

    python -m wsss.infer ckpt=PATH dataset.root=ROOT split=val out_dir=OUT \
        [scales=[1.0,0.5,1.5,2.0]] [flip=true] [batch_size=N] [crf=NAME] [overwrite=true]
    python -m wsss.infer method=rtc ckpt=rtc_contrast_best.pth dataset.root=/path/VOC2012 split=val out_dir=OUT

For every image of the split it writes

* ``OUT/scores/ID.npy``: the seed repos' CAM dict ``{fg class index (0-based): float32 HxW}`` at the
  original size (classes of the image-level label, or all of them for methods whose reference does so);
* ``OUT/pred/ID.png``: palette PNG, argmax under the method's background rule;
* ``OUT/crf/ID.png`` when a CRF preset is active (``crf=NAME``, or the method's own, e.g. ``rtc``).

``ckpt`` is a wsss Lightning checkpoint, or (with ``method=NAME``) an authors' release read by that method's
importer, with the architecture of its published recipe (``conf/experiment``). Scales, flip, resize rule and
CRF default to the method's ``inference`` recipe. Files are written atomically; a rerun skips images whose
outputs all exist (``overwrite=true`` redoes them). When GT masks exist, the mIoU of ``pred`` (and ``crf``)
is printed and written to ``OUT/metrics.json``.
"""
from __future__ import annotations

import json
import logging
from collections import deque
from pathlib import Path
from typing import Dict, List, Optional

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from wsss.data.formats import (atomic_write_bytes, load_cls_labels, read_image, read_label_png, save_score_dict,
                               write_label_png)
from wsss.paths import config_dir

log = logging.getLogger(__name__)


# ----- what to run on ------------------------------------------------------------------------
class SplitItem(dict):
    """``id``, ``image`` path, ``label`` (fg multi-hot or None), ``gt`` path or None."""


def split_items(dataset_cfg, split: str, num_classes: int) -> List[SplitItem]:
    """The images of ``split`` of a VOC-layout (or DensePose) root, checked to exist."""
    target = str(dataset_cfg.get("_target_", ""))
    if "densepose" in target.lower():
        from wsss.data.densepose import DensePoseLayout

        layout = DensePoseLayout(dataset_cfg.root)
        ids = layout.split_ids(split)
        items = [SplitItem(id=i, image=layout.image_path(i), label=None, gt=layout.gt_path(i)) for i in ids]
    else:
        from wsss.data.voc import VOCLayout

        layout = VOCLayout(dataset_cfg.root, packaged_fallback=bool(dataset_cfg.get("packaged_lists", False)))
        ids = layout.split_ids(split)
        labels_file = layout.cls_labels_file()
        labels = load_cls_labels(labels_file, num_classes - 1) if labels_file is not None else {}
        items = [SplitItem(id=i, image=layout.image_path(i), label=labels.get(i), gt=layout.mask_path(i, split))
                 for i in ids]
    if not items:
        raise ValueError(f"split '{split}' of {dataset_cfg.root} lists no images")
    for item in items:
        if not Path(item["image"]).is_file():
            raise FileNotFoundError(f"image '{item['id']}' of split '{split}' is missing: expected {item['image']}")
        if not Path(item["gt"]).is_file():
            item["gt"] = None
        if item["label"] is None and item["gt"] is not None:
            present = np.unique(read_label_png(item["gt"], num_classes))
            present = present[(present > 0) & (present < num_classes)]
            item["label"] = np.zeros(num_classes - 1, np.float32)
            item["label"][present - 1] = 1.0
    return items


# ----- output folders ------------------------------------------------------------------------
def prepare_out_dirs(out_dir: Path, with_crf: bool) -> Dict[str, Path]:
    from wsss.pseudo_label import check_writable

    dirs = {"scores": out_dir / "scores", "pred": out_dir / "pred"}
    if with_crf:
        dirs["crf"] = out_dir / "crf"
    for path in dirs.values():
        check_writable(path)
    return dirs


def outputs_of(dirs: Dict[str, Path], image_id: str) -> Dict[str, Path]:
    return {k: d / f"{image_id}.{'npy' if k == 'scores' else 'png'}" for k, d in dirs.items()}


# ----- CRF jobs (process pool) ---------------------------------------------------------------
def crf_job(task: dict) -> str:
    """Dense CRF of one image from its stored scores; writes the label PNG atomically."""
    from wsss.postprocess.crf import dense_crf, refine

    image = read_image(task["image"])
    if task["probs"] is not None:  # learned background: CRF on the network's own probabilities
        probs, class_ids = task["probs"], np.asarray(task["class_ids"])
        label = class_ids[np.argmax(dense_crf(image, probs, task["preset"]), axis=0)].astype(np.uint8)
    else:
        label = refine(image, task["fg"], task["keys"], task["preset"], task["bg"], task["num_classes"])
    write_label_png(task["out"], label)
    return task["out"]


class CRFRunner:
    """Runs CRF jobs in ``workers`` processes while inference goes on; bounded queue of pending jobs."""

    def __init__(self, workers: int):
        from wsss.postprocess.crf import worker_pool

        self.pool = worker_pool(workers)
        self.pending: deque = deque()
        self.limit = max(2, 2 * int(workers))

    def submit(self, task: dict) -> None:
        if self.pool is None:
            crf_job(task)
            return
        self.pending.append(self.pool.apply_async(crf_job, (task,)))
        while len(self.pending) > self.limit:
            self.pending.popleft().get()

    def close(self) -> None:
        while self.pending:
            self.pending.popleft().get()
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


# ----- the run -------------------------------------------------------------------------------
def resolve_recipe(model, cfg) -> dict:
    """The method's inference recipe with the CLI's non-null values on top."""
    recipe = dict(model.inference)
    for key in ("scales", "flip", "resize", "classes", "pred_with_labels"):
        if cfg.get(key) is not None:
            value = cfg[key]
            recipe[key] = [float(s) for s in value] if key == "scales" else value
    if not recipe["scales"] or any(float(s) <= 0 for s in recipe["scales"]):
        raise ValueError(f"scales must be positive numbers, got {recipe['scales']}")
    return recipe


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name} but no CUDA device is available; use device=cpu")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    if str(precision) in ("32", "fp32", "32-true"):
        return torch.autocast(device.type, enabled=False)
    if str(precision) in ("bf16", "bf16-mixed"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if str(precision) in ("16", "16-mixed", "fp16"):
        return torch.autocast(device.type, dtype=torch.float16)
    raise ValueError(f"precision={precision!r}; use 32, bf16-mixed or 16-mixed")


def stored_classes(label: Optional[torch.Tensor], mode: str, num_fg: int) -> List[int]:
    if mode == "all" or label is None:
        return list(range(num_fg))
    return [int(k) for k in torch.nonzero(label > 0.5).flatten()]


def write_image_outputs(model, recipe: dict, name: str, label, agg: torch.Tensor, fg: np.ndarray,
                        paths: Dict[str, Path], crf: Optional[CRFRunner], crf_task: dict) -> None:
    """Score dict, prediction PNG and (queued) CRF label of one image from its aggregated raw scores."""
    keys = stored_classes(label, recipe["classes"], fg.shape[0])
    save_score_dict(paths["scores"], {k: fg[k] for k in keys})
    full = model.finalize_scores(agg[None])[0].float()
    if recipe["pred_with_labels"] and label is not None:
        from wsss.methods.base import restrict_to_labels

        full = restrict_to_labels(full[None], label[None].to(full.device))[0]
    write_label_png(paths["pred"], full.argmax(0).cpu().numpy().astype(np.uint8))
    if crf is None:
        return
    task = dict(crf_task, out=str(paths["crf"]), probs=None, fg=None, keys=None)
    if model.bg.get("rule") == "learned" and crf_task["preset"].background is None:
        rows = [0] + [k + 1 for k in keys]
        task.update(probs=full[rows].cpu().numpy().astype(np.float32), class_ids=rows)
    else:
        task.update(fg=np.ascontiguousarray(fg[keys]), keys=keys)
    crf.submit(task)


def run(cfg: DictConfig, model=None) -> dict:
    """Infer every image of ``cfg.split``; returns the metrics (empty without GT)."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from wsss.inference.data import PyramidImages, SizeBatchSampler, collate_pyramids, image_size
    from wsss.inference.multiscale import aggregate_raw_scores
    from wsss.postprocess.crf import Background, CRFPreset, load_preset

    if cfg.get("retrieval_memory"):  # SPML segment retrieval, for a wsss checkpoint or a release alike
        if not hasattr(model, "set_retrieval_memory"):
            raise ValueError(f"retrieval_memory= is SPML's segment retrieval; method '{model.method_name}' has none")
        model.set_retrieval_memory(str(cfg.retrieval_memory))
    device = pick_device(str(cfg.device))
    model = model.to(device).eval()
    if cfg.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    recipe = resolve_recipe(model, cfg)
    preset = CRFPreset.from_config(cfg.crf) if cfg.get("crf") is not None else load_preset(recipe["crf"])
    out_dir = Path(str(cfg.out_dir)).expanduser()
    dirs = prepare_out_dirs(out_dir, preset.enabled)
    items = split_items(cfg.dataset, str(cfg.split), model.num_classes)
    todo = [it for it in items if cfg.overwrite or not all(p.is_file() for p in outputs_of(dirs, it["id"]).values())]
    log.info("%d images in split '%s', %d to do (%d done before)", len(items), cfg.split, len(todo),
             len(items) - len(todo))

    bg = None if model.bg.get("rule") == "learned" else Background.from_config(
        {k: v for k, v in model.bg.items() if k in ("rule", "threshold", "alpha")})
    crf = CRFRunner(int(cfg.workers)) if preset.enabled and todo else None
    crf_task = {"preset": preset, "bg": bg, "num_classes": model.num_classes}
    if todo:
        dataset = PyramidImages([it["id"] for it in todo], [str(it["image"]) for it in todo],
                                [it["label"] for it in todo], recipe["scales"], recipe["resize"])
        sampler = SizeBatchSampler([image_size(str(it["image"])) for it in todo], int(cfg.batch_size))
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=int(cfg.loader_workers),
                            collate_fn=collate_pyramids, pin_memory=device.type == "cuda")
        aggregation = getattr(model, "score_aggregation", "sum")
        image_of = {it["id"]: str(it["image"]) for it in todo}
        try:
            with tqdm(total=len(todo), desc="infer", unit="img", disable=not cfg.progress) as bar:
                for batch in loader:
                    inputs = [x.to(device, non_blocking=True) for x in batch["inputs"]]
                    with autocast(device, cfg.precision):
                        agg = aggregate_raw_scores(model, inputs, batch["size"], bool(recipe["flip"]), aggregation,
                                                   bool(cfg.get("channels_last")))
                    agg = agg.float()
                    fg = model.foreground_scores(agg).float().cpu().numpy()
                    for i, name in enumerate(batch["name"]):
                        write_image_outputs(model, recipe, name, batch["cls"][i], agg[i], fg[i],
                                            outputs_of(dirs, name), crf, dict(crf_task, image=image_of[name]))
                    bar.update(len(batch["name"]))
        finally:
            if crf is not None:
                crf.close()
    return report(cfg, items, dirs, model, out_dir)


def report(cfg, items: List[SplitItem], dirs: Dict[str, Path], model, out_dir: Path) -> dict:
    """mIoU of pred (and crf) PNGs when every image has GT; printed and written to ``OUT/metrics.json``."""
    from wsss.evaluate import evaluate_dir, format_table

    if not items or any(it["gt"] is None for it in items):
        log.info("no GT masks for every image of the split: mIoU not computed")
        return {}
    gt_dirs = {Path(it["gt"]).parent for it in items}
    if len(gt_dirs) != 1:
        return {}
    gt_dir, ids = gt_dirs.pop(), [it["id"] for it in items]
    metrics = {}
    for kind in ("pred", "crf"):
        if kind in dirs:
            res = evaluate_dir(dirs[kind], gt_dir, ids, "png", model.num_classes, model.class_names,
                               workers=max(1, int(cfg.workers)))
            print(f"== {kind} ==\n{format_table(res)}")
            metrics[kind] = {k: res[k] for k in ("mIoU", "mIoU_seam", "IoU", "IoU_seam", "precision", "recall")}
    atomic_write_bytes(out_dir / "metrics.json", (json.dumps(metrics, indent=1) + "\n").encode())
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="infer")
def main(cfg: DictConfig) -> None:
    from wsss.inference.loading import model_from_cli

    cfg, model = model_from_cli(cfg, "infer")
    metrics = run(cfg, model)
    print(f"outputs: {Path(str(cfg.out_dir)).expanduser()}")
    if "pred" in metrics:
        print(f"pred/mIoU={metrics['pred']['mIoU']:.4f}")


if __name__ == "__main__":
    main()
