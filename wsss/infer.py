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
CRF default to the method's ``inference`` recipe. The checkpoint's classes must be the data set's (the root's
``class_names.txt``, else the dataset config; :func:`wsss.classes.check_model_classes`).

``OUT`` (:mod:`wsss.outputs`) is ``out_dir`` and Hydra's run dir (``.hydra/``, ``infer.log``), else a new run
folder ``outputs/<date>/<time>/``; in a ``-m`` sweep an explicit ``out_dir=OUT`` becomes ``OUT/<job.num>``.
Beside the outputs: ``settings.json`` (checkpoint path, size and mtime, split, classes, scales, flip, resize,
background, CRF preset, precision...), ``config.yaml`` (the config with the values that ran, e.g. the
recipe's scales after overrides) and, when GT masks exist, ``metrics.json``. Files are written atomically; a
rerun skips images whose outputs all exist when ``settings.json`` matches (else it stops, naming both
values); ``overwrite=true`` redoes them.

Metrics (:mod:`wsss.reporting`): fractions named ``<split>/<metric>`` for ``pred`` (``val/mIoU``,
``val/mIoU_seam``, ``val/IoU``...) and ``<split>/crf/<metric>`` for the CRF labels (``val/crf/mIoU``). The last
line printed is ``<split>/mIoU=0.XXXX`` (the prediction's).
"""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from wsss.inference.loading import run_with_model
from wsss.inference.tool import run
from wsss.paths import config_dir

log = logging.getLogger("wsss.infer")
__all__ = ["main", "run"]


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="infer")
def main(cfg: DictConfig) -> float:
    metrics = run_with_model(cfg, "infer", run, log)
    return float(metrics["pred"]["mIoU"]) if "pred" in metrics else float("nan")


if __name__ == "__main__":
    main()
