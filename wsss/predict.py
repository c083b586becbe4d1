"""``python -m wsss.predict``: a trained model over any folder of images (no split list, labels or GT).

    python -m wsss.predict ckpt=CKPT input=DIR_OR_FILE out_dir=OUT [method=NAME] [crf=NAME] [save_scores=true]

Writes ``OUT/pred/REL.png`` and ``OUT/overlay/REL.jpg`` per image (:mod:`wsss.prediction.tool`); files that cannot
be read are skipped, listed at the end, and make the exit status 2 once every other image is done.
"""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from wsss.inference.loading import run_with_model
from wsss.paths import config_dir
from wsss.prediction.tool import run

log = logging.getLogger("wsss.predict")
__all__ = ["main", "run"]


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="predict")
def main(cfg: DictConfig) -> None:
    if run_with_model(cfg, "predict", run, log)["unreadable"]:
        sys.exit(2)


if __name__ == "__main__":
    main()
