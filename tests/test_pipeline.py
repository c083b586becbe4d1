"""The whole WSSS pipeline on the synthetic set, in process: CAM from tags -> multi-scale scores on train ->
threshold curve -> pseudo labels with dense CRF -> DeepLab second stage validated on the real GT."""
from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from conftest import CONF_DIR, compose_train_cfg, constant_background_miou
from wsss.engine import fit, load_method_checkpoint


def _compose(name: str, overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def run_pipeline(tmp_path, synthetic_root, seed: int = 0) -> dict:
    """Every stage on the tiny set with ``seed=`` for both trainings; the mIoUs of each stage."""
    from wsss import infer, pseudo_label
    from wsss.metrics.folders import evaluate_dir

    quiet = ["dataset.num_workers=0", "logger=none", "trainer.enable_progress_bar=false", f"seed={seed}"]
    cam_cfg = compose_train_cfg(tmp_path / "cam", synthetic_root, quiet + [
        "trainer.max_epochs=25", "trainer.check_val_every_n_epoch=25", "dataset.batch_size=8"])
    cam = fit(cam_cfg)

    icfg = _compose("infer", ["ckpt=unused", f"dataset.root={synthetic_root}", "split=train", "device=cpu",
                              "loader_workers=0", "workers=1", "progress=false", "scales=[1.0,0.5,1.5]"])
    with open_dict(icfg):
        icfg.out_dir = str(tmp_path / "infer")
    infer.run(icfg, load_method_checkpoint(tmp_path / "cam" / "checkpoints" / "last.ckpt"))

    ids = (synthetic_root / "ImageSets/Segmentation/train.txt").read_text().split()
    curve = evaluate_dir(tmp_path / "infer" / "scores", synthetic_root / "SegmentationClass", ids, "npy", 6,
                         curve_thresholds=[t / 20 for t in range(4, 16)])
    best = curve["curve"]["best"]["threshold"]

    pcfg = _compose("pseudo_label", [f"scores_dir={tmp_path / 'infer' / 'scores'}", f"dataset.root={synthetic_root}",
                                     "dataset.synthetic=null", "split=train", f"bg.threshold={best}", "crf=none",  # SEAM's CRF kernels suit 500 px, not 64
                                     "workers=0", "progress=false"])
    with open_dict(pcfg):
        pcfg.paths.output_dir = str(tmp_path / "pl_run")
        pcfg.out_dir = str(tmp_path / "pseudo")
    pseudo = pseudo_label.run(pcfg)

    seg_cfg = compose_train_cfg(tmp_path / "deeplab", synthetic_root, quiet + [
        "method=deeplab", "method.head={name: deeplabv3plus}", f"dataset.pseudo_label_dir={tmp_path / 'pseudo'}",
        "dataset.train_transforms=[{name: HorizontalFlip, p: 0.5}]", "trainer.max_epochs=14",
        "trainer.check_val_every_n_epoch=14", "dataset.batch_size=8", "method.optim.lr=0.005"])
    floor = constant_background_miou(seg_cfg)
    final = fit(seg_cfg)
    return {"floor": floor, "cam": cam["mIoU"], "threshold": best, "pseudo": pseudo["mIoU"], "final": final["mIoU"]}


def test_tags_to_second_stage(tmp_path, synthetic_root):
    """Seeds, pseudo labels and the second stage each beat the constant-background floor, and the DeepLab trained on
    the pseudo labels beats the CAM it came from. Same seed, same numbers (tests/test_determinism.py), so the
    margins below are against the spread over seeds (README, "Reproducibility"), not against noise of one seed."""
    r = run_pipeline(tmp_path, synthetic_root, seed=0)
    assert r["cam"] > r["floor"] + 0.1, r
    assert r["pseudo"] > r["floor"] + 0.2, r
    assert r["final"] > max(r["cam"], r["floor"] + 0.3), r
