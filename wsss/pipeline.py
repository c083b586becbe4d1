"""``python -m wsss.pipeline``: every stage of a method's recipe in one run folder, then one report.

    python -m wsss.pipeline [experiment=NAME_pipeline] [dataset.root=ROOT] [backbone.weights=FILE] \
        [stages=[scores,threshold]] [out_dir=RUN]

Stages (each its tool's own command in a child process, :mod:`wsss.stages.commands`): seed -> scores ->
threshold (calibrated on a few labelled images, the oracle beside it) -> pseudo_label -> second_stage -> final.
A rerun skips finished stages and resumes the interrupted one; ``RUN/report.md`` and ``RUN/report.json`` name
every number (``seed/val``, ``seed/train``, ``pseudo/train``, ``seg/val``, ``seg/val+crf``) with its protocol.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from wsss.outputs import log_errors
from wsss.paths import config_dir
from wsss.stages.run import run

log = logging.getLogger("wsss.pipeline")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="pipeline")
def main(cfg: DictConfig) -> None:
    with log_errors(log):
        run(cfg, Path(str(cfg.paths.output_dir)))


if __name__ == "__main__":
    main()
