"""experiment=hsc_voc is the reference's recipe: parameter groups (with the extra_F quirk), momentum 5e-4, the poly
schedule held after 13,215 of 20,000 steps, frozen BatchNorms, saliency supervision."""
from __future__ import annotations

import pytest

from conftest import compose_train_cfg
from wsss.engine import build_method
from wsss.optim import lr_factor


def test_voc_recipe_builds_the_reference_optimiser(tmp_path):
    cfg = compose_train_cfg(tmp_path, None, ["experiment=hsc_voc", "dataset.root=/nonexistent"])
    assert cfg.supervision.name == "saliency" and cfg.trainer.max_steps == 20000 and cfg.dataset.batch_size == 12
    assert cfg.method.optim.momentum == 5e-4 and cfg.method.tau == 0.5 and cfg.method.view2_size == 128
    model = build_method(cfg)
    assert model.levels == {"mid": "conv4", "high": "conv5", "final": "conv6"}
    groups = {}
    for g in model.param_groups():
        groups.setdefault((g["lr"], g["weight_decay"]), []).extend(g["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    by_group = {k: sorted(names[id(p)] for p in v) for k, v in groups.items()}
    assert set(by_group) == {(0.01, 5e-4), (0.02, 0.0), (0.1, 5e-4)}
    # from_scratch_layers at 10x (no biases); extra_F's convs at 1x / 2x: the Sequential is in the list, not its convs
    assert by_group[(0.1, 5e-4)] == ["classifier.weight", "pcm_fuse.weight", "pcm_high.weight", "pcm_mid.weight",
                                     "pixel_proj.weight"]
    assert by_group[(0.02, 0.0)] == ["region_proj.0.bias", "region_proj.3.bias"]
    assert {"region_proj.0.weight", "region_proj.3.weight"} <= set(by_group[(0.01, 5e-4)])
    assert not any("region_proj.1" in n or ".bn" in n for v in by_group.values() for n in v)   # BNs never train
    assert not any(n.startswith("backbone.b2.") for n in by_group[(0.01, 5e-4)])             # frozen stem / b2*
    model.train()
    assert not model.region_proj[1].training and not model.backbone.bn7.training
    factor = lr_factor(cfg.method.scheduler, cfg.trainer.max_steps)
    held = (1 - 13214 / 13215) ** 0.9
    assert factor(0) == 1.0 and factor(13214) == pytest.approx(held) and factor(19999) == pytest.approx(held)
