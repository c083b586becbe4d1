"""``python -m wsss.train``: fit + validate a method; prints ``val/mIoU=...`` last."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from wsss.engine import fit, summary_lines
from wsss.paths import config_dir


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float:
    metrics = fit(cfg)
    if metrics:
        print("\n".join(summary_lines(cfg, metrics)), flush=True)
    return float(metrics.get("mIoU", float("nan"))) if metrics else float("nan")


if __name__ == "__main__":
    main()
