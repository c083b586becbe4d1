"""``python -m wsss.pseudo_label``: score maps -> background rule -> dense CRF -> pseudo-label PNGs.

    python -m wsss.pseudo_label scores_dir=DIR [out_dir=OUT] dataset=voc dataset.root=ROOT \
        split=train_aug bg.threshold=0.2 crf=NAME workers=N [overwrite=true] [logger=wandb]

Reads SEAM-style score dicts ``scores_dir/ID.npy`` (``{fg index k: HxW}`` for class ``k+1``,
what ``wsss.infer`` and the seed repos write) for every id of the split, adds the background
(``bg``, or the CRF preset's own rule), refines with the ``crf`` preset (``conf/crf/``; ``none``
skips it), and writes the argmax as a VOC palette PNG ``OUT/ID.png``, atomically.

The output folder (:mod:`wsss.outputs`) is ``out_dir`` (also the run dir: ``.hydra/``, ``pseudo_label.log``),
else a new run folder ``outputs/<date>/<time>/``; in a ``-m`` sweep an explicit ``out_dir=OUT`` becomes
``OUT/<job.num>``, so every run of the sweep writes and scores its own labels. Beside the PNGs:
``settings.json`` (what determines them: scores_dir, split, data root, classes, background rule, CRF
preset), ``config.yaml`` (the settings used) and, when GT masks exist for the split, ``metrics.json``
(:mod:`wsss.reporting`; fractions named ``<split>/<metric>``; the last line printed is
``<split>/mIoU=0.XXXX``). A rerun keeps PNGs that exist only when ``settings.json`` matches (else it stops
naming the difference); ``overwrite=true`` redoes them. The classes must be those of the data: a root's
``class_names.txt`` and ``cls_labels`` and the scores' class indices are checked against the config.
"""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from wsss.labelling import run
from wsss.inference.loading import run_with_model
from wsss.outputs import log_errors
from wsss.paths import config_dir

log = logging.getLogger("wsss.pseudo_label")
__all__ = ["main", "run"]


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="pseudo_label")
def main(cfg: DictConfig) -> float:
    if cfg.get("ckpt"):  # fused: inference and labelling together, no score maps on disk
        return float(run_with_model(cfg, "pseudo_label", run, log).get("mIoU", float("nan")))
    with log_errors(log):
        return float(run(cfg).get("mIoU", float("nan")))


if __name__ == "__main__":
    main()
