"""``python -m wsss.evaluate``: mIoU of a prediction folder against GT, optionally over bg thresholds.

    python -m wsss.evaluate pred_dir=DIR gt_dir=ROOT/SegmentationClass list=LIST type=npy|png \
        [threshold=0.2] [curve=true] [curve_thresholds=seam|auto|[...]] [out_dir=DIR] [out=FILE.json] \
        [workers=N] [logger=wandb]

``type=png``: label PNGs (``P`` or ``L``; 255 in a prediction is "no label" and counts as a miss).
``type=npy``: SEAM score dicts ``{fg index k: HxW}`` for class ``k+1``; the background is a constant
plane at ``threshold``, or, with ``curve=true``, the best of every threshold of ``curve_thresholds``
(``seam`` = 0.00..0.59, ``auto`` = 0.00..1.00, or a list), all from one pass over the files. A best
threshold at the edge of the range is warned about (the optimum may lie outside it).

Numbers (:mod:`wsss.metrics.folders`) equal YudeWang/SEAM ``evaluation.py`` (``mIoU_seam``) and are also
given over present classes (``mIoU``), as fractions named ``<split>/<metric>`` where split is the list
file's stem (``val/mIoU`` for ``.../val.txt``; :mod:`wsss.reporting`). The last line printed is
``<split>/mIoU=0.XXXX``. Everything goes to the output folder (``out_dir``, else the run dir;
:mod:`wsss.outputs`): ``evaluate.log``, ``config.yaml`` (the settings used), the metrics JSON (``out``,
default ``metrics.json`` there), a per-class CSV and, with the curve, ``*_curve.png`` and
``*_per_class.png`` beside the JSON.
"""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from wsss.evaluation.run import run
from wsss.outputs import log_errors
from wsss.paths import config_dir

log = logging.getLogger("wsss.evaluate")  # not __main__ under python -m
__all__ = ["main", "run"]


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
def main(cfg: DictConfig) -> float:
    with log_errors(log):
        return run(cfg)["mIoU"]


if __name__ == "__main__":
    main()
