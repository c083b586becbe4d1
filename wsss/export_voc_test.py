"""``python -m wsss.export_voc_test``: predictions of the VOC 2012 test set as the evaluation server's archive.

    python -m wsss.export_voc_test pred_dir=OUT/pred out=results.tar.gz [comp=6] [image_dir=ROOT/JPEGImages]

Checks every file first and lists every problem (missing or extra ids, not an indexed VOC-palette PNG, values
outside 0..20, a size unlike its image); writes nothing unless all pass (:mod:`wsss.export.voc_test`).
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from wsss.export.voc_test import archive_member, export, read_ids
from wsss.outputs import log_errors
from wsss.paths import config_dir
from wsss.reporting import echo

log = logging.getLogger("wsss.export_voc_test")


def run(cfg) -> Path:
    ids = read_ids(cfg.get("list"))
    image_dir = Path(str(cfg.image_dir)).expanduser() if cfg.get("image_dir") else None
    out = export(Path(str(cfg.pred_dir)).expanduser(), Path(str(cfg.out)).expanduser(), ids, int(cfg.comp),
                 image_dir, bool(cfg.get("progress", True)))
    echo(f"wrote {out}: {len(ids)} predictions as {archive_member(int(cfg.comp), 'ID')}", logger=log)
    return out


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export_voc_test")
def main(cfg: DictConfig) -> None:
    with log_errors(log):
        run(cfg)


if __name__ == "__main__":
    main()
