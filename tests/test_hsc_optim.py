"""HSC's optimiser as the reference builds it (Wu0409/HSC_WSSS@402ee60 module/optimizer.py, utils/torchutils.py
PolyOptimizer, network/resnet38_eps_seam_hsc.py get_parameter_groups) expressed in wsss.optim's vocabulary:
scheduler.max_steps (the lr frozen from max_step on), the 1x/2x/10x/20x groups with extra_F at 1x/2x, SGD momentum 5e-4."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from wsss.optim import lr_factor, optimizers_for

POLY = {"name": "poly", "power": 0.9, "max_steps": 13215}  # (10582 // 12) * 15, train_voc.py:84


def test_max_steps_freezes_the_lr_at_the_reference_max_step():
    f = lr_factor(POLY, 20000)
    assert f(0) == 1.0
    for t in (1, 500, 13214):
        assert f(t) == pytest.approx((1 - t / 13215) ** 0.9, rel=1e-12)
    assert f(13215) == f(19999) == f(13214) == pytest.approx(1.95e-4 / 1.0, rel=0.01)
    plain = lr_factor({"name": "poly", "power": 0.9}, 20000)
    assert plain(13215) != f(13215) and plain(19999) < 1e-3  # without it poly spans the whole run
    with pytest.raises(ValueError, match="max_steps"):
        lr_factor({"name": "poly", "max_steps": -1}, 10)


class TinyHSC(nn.Module):
    """The reference network's parameter kinds: backbone convs (no bias, one with bias), frozen BNs, bias-free
    heads from scratch, and extra_F (conv-BN-conv with biases) that its membership test misses."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))
        self.fc8 = nn.Conv2d(4, 21, 1, bias=False)
        self.f9 = nn.Conv2d(7, 6, 1, bias=False)
        self.pixel_proj = nn.Conv2d(4, 5, 1, bias=False)
        self.roi_proj = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.Conv2d(6, 6, 1))
        for m in self.modules():  # resnet38d Net.train(): every BN frozen
            if isinstance(m, nn.BatchNorm2d):
                m.weight.requires_grad_(False)
                m.bias.requires_grad_(False)


def reference_groups(model):
    """get_parameter_groups + get_optimizer: Conv2d only; from_scratch_layers = [fc8, f9, proj_fc, extra_F]
    matched by module identity, so extra_F's inner convs land in the backbone groups."""
    scratch = [model.fc8, model.f9, model.pixel_proj, model.roi_proj]
    groups = ([], [], [], [])
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            new = any(m is s for s in scratch)
            groups[2 if new else 0].append(m.weight)
            if m.bias is not None:
                groups[3 if new else 1].append(m.bias)
    lr, wd = 0.01, 5e-4
    return [{"params": groups[0], "lr": lr, "weight_decay": wd}, {"params": groups[1], "lr": 2 * lr, "weight_decay": 0},
            {"params": groups[2], "lr": 10 * lr, "weight_decay": wd},
            {"params": groups[3], "lr": 20 * lr, "weight_decay": 0}]


def test_groups_schedule_and_momentum_quirk_equal_the_reference():
    torch.manual_seed(0)
    ours, ref = TinyHSC(), TinyHSC()
    ref.load_state_dict(ours.state_dict())
    optim = {"name": "sgd", "lr": 0.01, "momentum": 5.0e-4, "weight_decay": 5.0e-4,
             "paramwise": {"lr_mult": {"backbone": 1.0, "roi_proj": 1.0}, "default_lr_mult": 10.0,
                           "bias_lr_mult": 2.0, "bias_decay_mult": 0.0, "norm_trainable": False}}
    out = optimizers_for(ours, optim, {"name": "poly", "power": 0.9, "max_steps": 3}, total_steps=6)
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    # PolyOptimizer(params, lr, weight_decay, max_step): SGD's third positional argument is momentum
    groups = reference_groups(ref)
    ref_opt = torch.optim.SGD(groups, 0.01, 5e-4)
    initial = [g["lr"] for g in ref_opt.param_groups]
    def per_parameter(model, o):
        index = {id(p): n for n, p in model.named_parameters()}
        return {index[id(p)]: (g["lr"], g["weight_decay"], g["momentum"]) for g in o.param_groups for p in g["params"]}

    assert per_parameter(ours, opt) == per_parameter(ref, ref_opt)
    assert per_parameter(ours, opt)["roi_proj.2.bias"] == (0.02, 0.0, 5e-4)  # extra_F: 2x, not 20x
    x = torch.randn(2, 3, 9, 9)
    for step in range(6):
        if step < 3:  # PolyOptimizer.step: lr updated only while global_step < max_step
            for g, lr0 in zip(ref_opt.param_groups, initial):
                g["lr"] = lr0 * (1 - step / 3) ** 0.9
        for model, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad()
            f = model.backbone(x)
            loss = sum((m(f) ** 2).mean() for m in (model.fc8, model.pixel_proj, model.roi_proj)) + \
                (model.f9(torch.cat([f[:, :4], f[:, :3]], 1)) ** 2).mean()
            loss.backward()
            o.step()
        sched.step()
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7, msg=name)
    assert not torch.equal(ours.roi_proj[0].weight, TinyHSC().roi_proj[0].weight)
