"""wsss.optim: one paramwise vocabulary reproduces every method's former groups and schedules exactly."""
from __future__ import annotations

import hashlib
import json
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import compose_train_cfg
from wsss.engine import build_method
from wsss.optim import build_optimizer, lr_factor, method_optim, param_groups

FIXTURE = Path(__file__).parent / "fixtures" / "optim" / "groups_36c07a3.json"
STEPS = (0, 1, 7, 50, 99, 100, 150, 300)


def optimiser_summary(model) -> tuple:
    """Per distinct (lr, weight decay, momentum): tensor and element counts and a hash of the names; the
    scheduler's factors at ``STEPS`` of a 100-step run (None: constant)."""
    model._trainer = types.SimpleNamespace(estimated_stepping_batches=100)
    names = {id(p): n for n, p in model.named_parameters()}
    out = model.configure_optimizers()
    sched = out["lr_scheduler"]["scheduler"] if isinstance(out, dict) else None
    opt = out["optimizer"] if isinstance(out, dict) else out
    merged: dict = {}
    for g in opt.param_groups:
        merged.setdefault((g["lr"], g["weight_decay"], g.get("momentum")), []).extend(g["params"])
    groups = []
    for (lr, wd, momentum), params in merged.items():
        listed = sorted(names[id(p)] for p in params)
        groups.append({"lr": round(lr, 10), "weight_decay": wd, "momentum": momentum, "tensors": len(listed),
                       "elements": sum(p.numel() for p in params),
                       "names_sha1": hashlib.sha1("\n".join(listed).encode()).hexdigest()[:12]})
    groups.sort(key=lambda g: (g["lr"], g["weight_decay"], g["names_sha1"]))
    factors = [round(sched.lr_lambdas[0](t), 10) for t in STEPS] if sched else None
    return groups, factors


def test_paramwise_groups_equal_the_methods_own_groups(tmp_path):
    """Every recipe's optimiser (per parameter: lr, decay, momentum) and schedule as before the refactor."""
    want = json.loads(FIXTURE.read_text())
    recipes = [k for k in want if not k.endswith(" factors")]
    assert len(recipes) == 13
    for i, recipe in enumerate(recipes):
        overrides = recipe.split()
        if not (len(overrides) == 1 and overrides[0].startswith("method=")):
            overrides.append("dataset.root=/nonexistent")
        groups, factors = optimiser_summary(build_method(compose_train_cfg(tmp_path / str(i), None, overrides)))
        assert groups == want[recipe], recipe
        assert factors == want[recipe + " factors"], recipe


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.ModuleDict({"cam": nn.Conv2d(4, 2, 1), "seg": nn.Conv2d(4, 3, 1)})


def lrs_of(groups, model) -> dict:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)]: (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}


def test_first_matching_prefix_wins_and_biases_follow_their_rule():
    net = Net()
    got = lrs_of(param_groups(net, 0.1, 1e-4, {"lr_mult": {"head.cam": 5.0, "backbone": 1.0},
                                                "default_lr_mult": 10.0, "bias_lr_mult": 2.0,
                                                "bias_decay_mult": 0.0}), net)
    assert got["head.cam.weight"] == pytest.approx((0.5, 1e-4))
    assert got["head.cam.bias"] == pytest.approx((1.0, 0.0))
    assert got["head.seg.weight"] == pytest.approx((1.0, 1e-4))
    assert got["backbone.0.bias"] == pytest.approx((0.2, 0.0))
    assert got["backbone.1.bias"] == pytest.approx((0.2, 0.0))  # BatchNorm biases are biases by default
    assert len(got) == sum(1 for _ in net.parameters())


def test_norm_parameters_can_count_as_weights_or_stay_out():
    net = Net()
    as_weights = lrs_of(param_groups(net, 0.1, 1e-4, {"bias_lr_mult": 2.0, "norm_biases_as_biases": False}), net)
    assert as_weights["backbone.1.bias"] == pytest.approx((0.1, 1e-4))
    frozen = lrs_of(param_groups(net, 0.1, 1e-4, {"norm_trainable": False}), net)
    assert "backbone.1.weight" not in frozen and "backbone.1.bias" not in frozen and "backbone.0.weight" in frozen
    net.backbone[0].weight.requires_grad_(False)
    assert "backbone.0.weight" not in lrs_of(param_groups(net, 0.1, 0.0, None), net)


def test_warmup_poly_is_spml_lr_poly():
    """spml/utils/general/train.py: lr * min(0.1 (1 - a) + a, poly) with a = step / warm-up for step < warm-up."""
    factor = lr_factor({"name": "warmup_poly", "power": 0.9, "warmup_steps": 10}, 100)
    assert factor(0) == pytest.approx(0.1)
    assert factor(5) == pytest.approx(min(0.1 * 0.5 + 0.5, (1 - 5 / 100) ** 0.9))
    assert factor(10) == pytest.approx((1 - 10 / 100) ** 0.9)
    assert factor(100) == 0.0 and factor(150) == 0.0
    assert lr_factor({"name": "poly", "power": 1.0}, 4)(1) == pytest.approx(0.75)
    assert lr_factor({"name": "constant"}, 4) is None


def test_bad_optimiser_configs_say_what_to_write():
    net = Net()
    with pytest.raises(ValueError, match="paramwise: unknown keys \\['bias_lr'\\]"):
        param_groups(net, 0.1, 0.0, {"bias_lr": 2.0})
    with pytest.raises(ValueError, match="paramwise.default_lr_mult"):
        build_optimizer(net, {"name": "sgd", "lr": 0.1, "head_lr_mult": 10.0})
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        build_optimizer(net, {"name": "rmsprop", "lr": 0.1})
    with pytest.raises(ValueError, match="unknown scheduler 'step'"):
        lr_factor({"name": "step"}, 10)
    opt = build_optimizer(net, {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05})
    assert isinstance(opt, torch.optim.AdamW) and {g["weight_decay"] for g in opt.param_groups} == {0.05}


def test_method_optim_reads_the_method_yaml():
    assert method_optim("spml", lr=0.5)["paramwise"]["bias_lr_mult"] == 2.0
    assert method_optim("spml", lr=0.5)["lr"] == 0.5


LEGACY = {  # hyper-parameters as checkpoints written before wsss.optim hold them (commit 36c07a3)
    "rtc": ({"bias_lr_mult": 2.0}, {"name": "poly", "power": 0.9}),
    "spml": ({"lr_mult": {"backbone_weight": 1.0, "backbone_bias": 2.0, "head_weight": 10.0, "head_bias": 20.0},
              "warmup_steps": 0}, {"name": "poly", "power": 0.9}),  # the synthetic preset has no warm-up
    "deeplab": ({"bias_lr_mult": 2.0, "bias_weight_decay": 0.0, "train_bn_affine": True},
                {"name": "poly", "power": 0.9}),
}


@pytest.mark.parametrize("method", sorted(LEGACY))
def test_checkpoints_from_before_the_vocabulary_load_with_the_same_groups(tmp_path, method):
    import pytorch_lightning as pl

    from wsss.engine import load_method_checkpoint

    model = build_method(compose_train_cfg(tmp_path, None, [f"method={method}"]))
    hparams = dict(model.hparams)
    extra, scheduler = LEGACY[method]
    optim = {k: v for k, v in dict(hparams["optim"]).items() if k != "paramwise"}
    hparams.update(extra, optim={**optim, "head_lr_mult": 10.0}, scheduler=scheduler)
    cls = type(model)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": pl.__version__,
                "wsss": {"method": method, "target": f"{cls.__module__}.{cls.__qualname__}"}}, tmp_path / "old.ckpt")
    loaded = load_method_checkpoint(tmp_path / "old.ckpt")
    assert optimiser_summary(loaded) == optimiser_summary(model)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
