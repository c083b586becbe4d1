"""``python -m wsss.train``: fit + validate a method; prints ``val/mIoU=...`` last.

The summary (per-class IoU, mIoU, paths) goes through logging: plain on stdout, with time and level in
``<run dir>/train.log`` (``conf/hydra/default.yaml``); a failure's traceback goes to that file too.
"""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from wsss.engine import fit, summary_lines
from wsss.outputs import log_errors
from wsss.paths import config_dir

log = logging.getLogger("wsss.train")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float:
    with log_errors(log):
        metrics = fit(cfg)
    if metrics:
        for line in summary_lines(cfg, metrics):
            log.info(line)
    return float(metrics.get("mIoU", float("nan"))) if metrics else float("nan")


if __name__ == "__main__":
    main()
