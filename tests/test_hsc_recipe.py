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
    # the training terms' settings come from conf/method/hsc.yaml: all seven terms at 1, tau 0.5, the contrast at
    # 128 // 8 with the reference's inner constants, the label CRF of crf_inference_label
    assert model.loss_weights == {k: 1.0 for k in ("cls", "sal", "er", "ecr", "rsc", "csc", "psc")}
    assert model.tau == 0.5 and model.lam == 0.5 and model.bg_threshold == 0.10 and model.ecr_fraction == 0.2
    assert model.contrast_size == 16 and model.contrast.size == 16 and model.contrast.num_classes == 21
    assert {k: model.contrast.cfg[k] for k in ("class_topk", "class_memory_topk", "csc_weight", "psc_weight")} == \
        {"class_topk": 128, "class_memory_topk": 16, "csc_weight": 0.025, "psc_weight": 0.1}
    assert tuple(model.contrast.class_memory.shape) == (2, 21, 256) and tuple(model.contrast.pixel_memory.shape) == (2, 21, 128)
    assert model.label_crf.gt_prob == 0.7 and model.label_crf.iterations == 10 and model.label_crf.bilateral.srgb == 5
    factor = lr_factor(cfg.method.scheduler, cfg.trainer.max_steps)
    held = (1 - 13214 / 13215) ** 0.9
    assert factor(0) == 1.0 and factor(13214) == pytest.approx(held) and factor(19999) == pytest.approx(held)


def test_training_settings_are_config_keys_and_the_losses_run_in_float32_under_bf16(tmp_path, synthetic_root):
    """`method.contrast.*`, `method.label_crf.*`, `method.bg_threshold` reach the module (YAML, not literals); under
    bf16 autocast the seven terms are float32 and close to the float32 run (memories frozen for the comparison)."""
    import torch

    cfg = compose_train_cfg(tmp_path, synthetic_root, [
        "method=hsc", "method.contrast.class_topk=64", "method.contrast.size=4", "method.label_crf.gt_prob=0.6",
        "method.bg_threshold=0.2", "method.loss_weights.psc=0.5"])
    model = build_method(cfg)
    assert model.contrast.cfg["class_topk"] == 64 and model.contrast_size == 4 and model.label_crf.gt_prob == 0.6
    assert model.bg_threshold == 0.2 and model.loss_weights["psc"] == 0.5 and model.view2_size == 48
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(2, 3, 64, 64, generator=g), "saliency": torch.rand(2, 64, 64, generator=g),
             "cls": torch.tensor([[1.0, 0, 1, 0, 0], [0, 1, 0, 0, 0]])}
    model.train()
    model.contrast.eval()   # no memory update: both runs see the same memories
    memory = model.contrast.pixel_memory.clone()
    with torch.no_grad():
        full = model.training_losses(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model.training_losses(batch)
    assert set(full) == set(half) == {"cls", "sal", "er", "ecr", "rsc", "csc", "psc"}
    assert torch.equal(memory, model.contrast.pixel_memory)
    for k in full:
        assert half[k].dtype == torch.float32 and torch.isfinite(half[k]), k
        assert abs(float(half[k]) - float(full[k])) < 0.05 * abs(float(full[k])) + 0.02, (k, half[k], full[k])
