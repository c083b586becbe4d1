"""EPS (halbielee/EPS): the saliency loss against the reference, the network's layout, the published recipe, and
learning on the synthetic set next to the CAM baseline."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import compose_train_cfg, constant_background_miou
from wsss.engine import build_method, fit, load_method_checkpoint
from wsss.methods.eps_losses import eps_saliency_parts

FIXTURE = Path(__file__).parent / "fixtures" / "eps" / "saliency_loss.npz"


@pytest.mark.parametrize("tau", [0.4, 0.5])
def test_saliency_loss_matches_the_reference(tau):
    ref = np.load(FIXTURE)
    key = f"tau{int(tau * 10)}"
    cam = torch.from_numpy(ref["cam"]).requires_grad_(True)
    parts = eps_saliency_parts(cam, torch.from_numpy(ref["saliency"]), torch.from_numpy(ref["label"]), tau, 0.5)
    parts["loss"].backward()
    np.testing.assert_allclose(parts["loss"].item(), ref[f"{key}_loss"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(parts["fg"].detach().numpy(), ref[f"{key}_fg"], atol=1e-6)
    np.testing.assert_allclose(parts["bg"].detach().numpy(), ref[f"{key}_bg"], atol=1e-6)
    np.testing.assert_allclose(cam.grad.numpy(), ref[f"{key}_grad"], atol=1e-7)
    # the valid-class test: image 0 class 3 valid, 7 invalid; image 1 class 0 valid only at tau 0.4
    assert parts["valid"][0, 3] and not parts["valid"][0, 7]
    assert bool(parts["valid"][1, 0]) == (tau == 0.4)


def test_voc_recipe_is_the_reference(tmp_path):
    """experiment=eps_voc: resnet38d conv6, fc8 4096 -> 21 without bias, frozen stem and b2*, groups 1/2/10/20 x 0.01,
    SGD momentum 5e-4 (PolyOptimizer quirk), 20,000 steps, tau 0.4, saliency supervision."""
    cfg = compose_train_cfg(tmp_path, None, ["experiment=eps_voc", "dataset.root=/nonexistent"])
    assert cfg.supervision.name == "saliency" and cfg.trainer.max_steps == 20000 and cfg.dataset.batch_size == 8
    model = build_method(cfg)
    assert model.feature == "conv6" and model.tau == 0.4 and model.lam == 0.5
    assert tuple(model.classifier.weight.shape) == (21, 4096, 1, 1) and model.classifier.bias is None
    assert not any(p.requires_grad for p in model.backbone.b2_2.parameters())
    groups = {(g["lr"], g["weight_decay"]) for g in model.param_groups()}
    assert groups == {(0.01, 5e-4), (0.1, 5e-4)}            # resnet38d convs have no biases; fc8 has none either
    assert cfg.method.optim.momentum == 5e-4 and cfg.method.scheduler.power == 0.9


def test_eps_needs_saliency_in_the_batch(tmp_path, synthetic_root):
    cfg = compose_train_cfg(tmp_path, synthetic_root, ["method=eps", "supervision=tag"])
    model = build_method(cfg)
    batch = {"image": torch.zeros(1, 3, 32, 32), "cls": torch.zeros(1, 5)}
    with pytest.raises(KeyError, match="supervision=saliency"):
        model.training_losses(batch)


@pytest.mark.slow
@pytest.mark.parametrize("method,margin", [("eps", 0.2), ("hsc", 0.35)])
def test_learns_on_the_synthetic_set(tmp_path, synthetic_root, one_thread, method, margin):
    """`python -m wsss.train method=eps|hsc` (their presets) for 40 epochs on the test-sized synthetic set. Measured
    with this setting (one thread): HSC with all seven terms 0.558 val mIoU, EPS 0.451, the CAM baseline 0.301
    (method=cam, same epochs and batch; 0.34 at 25 epochs, test_train.py), constant background 0.137. HSC's margin
    (0.35 over the floor) is one EPS does not reach (0.31): it fails if HSC's own terms stop helping."""
    cfg = compose_train_cfg(tmp_path, synthetic_root, [
        f"method={method}", "trainer.max_epochs=40", "trainer.check_val_every_n_epoch=40",
        "trainer.enable_progress_bar=false", "dataset.num_workers=0", "dataset.batch_size=8", "logger=none"])
    assert cfg.supervision.name == "saliency"
    floor = constant_background_miou(cfg)
    metrics = fit(cfg)
    assert metrics["mIoU"] > floor + margin, (metrics["mIoU"], floor)
    back = load_method_checkpoint(tmp_path / "checkpoints" / "last.ckpt")   # what wsss.infer ckpt=... reads
    assert back.method_name == method and back.tau == cfg.method.tau
