"""``python -m wsss.spml_memory``: SPML's memory of labelled training segments, for segment-retrieval inference.

    python -m wsss.spml_memory ckpt=PATH dataset.root=ROOT split=train_aug out=MEMORY.npz \
        [method.test_image_size=512] [method.retrieval_num_clusters=[12,12]] [labels_dir=DIR]
    python -m wsss.spml_memory method=spml ckpt=OFFICIAL_DIR dataset.root=/path/VOC2012 method.test_image_size=512 \
        out=memory_train_aug.npz

It is ``pyscripts/inference/prototype.py`` (twke18/SPML@0800afd): for every image of ``split`` the longer side to
``method.test_image_size`` (when > 0; label map by nearest), zero padding to ``method.test_crop_size``, sliding-window
unit embeddings averaged, vMF k-means on a ``method.retrieval_num_clusters`` grid (the bashscripts pass
``--kmeans_num_clusters 12,12``), and per segment its prototype (unit mean embedding) and the majority label of the
image's label map. The bashscripts feed it ``datasets/voc12/panoptic_train+_hed.txt``: train+ (= ``train_aug``)
with the **ground-truth** ``segcls`` masks, i.e. ``SegmentationClassAug`` here (``labels_dir=`` points elsewhere,
e.g. to pseudo labels). ``OUT`` (npz, written atomically) holds ``prototypes`` (M x D float32) and ``labels`` (M int64;
255 where the majority is the ignore label, dropped at load time as ``inference.py`` does) in the order
``inference.py`` loads the per-image files (sorted ``ID.npy``), plus ``ids`` / ``counts`` and the settings used.

Predict with it: ``python -m wsss.infer ... method.retrieval_memory=OUT scales=[1.0] flip=false crf=none``
(``docs/spml.md``, "Segment retrieval").
"""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from wsss.methods.spml_memory import run, apply_settings
from wsss.outputs import log_errors
from wsss.paths import config_dir

log = logging.getLogger("wsss.spml_memory")
__all__ = ["main", "run", "apply_settings"]


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="spml_memory")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from wsss.inference.loading import model_from_cli

    with log_errors(log):
        cfg, model = model_from_cli(cfg, "spml_memory")
        if cfg.get("method") is not None:
            apply_settings(model, cfg, HydraConfig.get().overrides.task)
        run(cfg, model)


if __name__ == "__main__":
    main()
