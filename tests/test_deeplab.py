"""method=deeplab: the second stage learns from pseudo-label PNGs and predicts background-first probabilities."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import compose_train_cfg, constant_background_miou
from wsss.engine import build_method, fit


@pytest.mark.parametrize("head", ["aspp_v2", "deeplabv3plus"])
def test_learns_from_gt_used_as_pseudo_labels(tmp_path, synthetic_root, head):
    overrides = ["method=deeplab", f"method.head={{name: {head}}}",
                 f"dataset.pseudo_label_dir={synthetic_root / 'SegmentationClass'}",  # GT PNGs posing as pseudo labels
                 "dataset.train_transforms=[{name: HorizontalFlip, p: 0.5}]",          # 64 px images, no crop
                 "trainer.max_epochs=14", "trainer.check_val_every_n_epoch=14", "trainer.enable_progress_bar=false",
                 "dataset.num_workers=0", "dataset.batch_size=8", "logger=none", "method.optim.lr=0.005"]
    cfg = compose_train_cfg(tmp_path, synthetic_root, overrides)
    floor = constant_background_miou(cfg)
    metrics = fit(cfg)
    # measured: constant background ~0.14; aspp_v2 ~0.72, deeplabv3plus ~0.88 after 14 epochs
    assert metrics["mIoU"] > floor + 0.35, (metrics["mIoU"], floor)


def test_scores_are_background_first_probabilities_and_groups_follow_the_lr_rule(tmp_path):
    cfg = compose_train_cfg(tmp_path, None, ["method=deeplab", "method.head={name: aspp_v3}", "+method.head.width=16"])
    model = build_method(cfg).eval()
    with torch.no_grad():
        s = model.scores(torch.randn(2, 3, 40, 48))
    assert s.shape == (2, cfg.dataset.num_classes, 40, 48)
    torch.testing.assert_close(s.sum(1), torch.ones(2, 40, 48))
    groups = model.param_groups()
    lr = cfg.method.optim.lr
    assert sorted(round(g["lr"] / lr, 6) for g in groups) == [1.0, 10.0, 20.0]  # tiny backbone has no biases
    assert all(g.get("weight_decay") == 0.0 for g in groups if g["lr"] == pytest.approx(20 * lr))
    n = sum(p.numel() for g in groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.optim_cfg["paramwise"] = {**model.optim_cfg["paramwise"], "norm_trainable": False}
    bn = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters())
    assert sum(p.numel() for g in model.param_groups() for p in g["params"]) == n - bn


def test_missing_masks_explain_the_fix(tmp_path):
    cfg = compose_train_cfg(tmp_path, None, ["method=deeplab"])
    model = build_method(cfg)
    with pytest.raises(KeyError, match="pseudo_label_dir"):
        model.training_losses({"image": torch.randn(1, 3, 32, 32), "cls": torch.zeros(1, 5)})


def test_deeplabv2_recipe_reproduces_the_rtc_hsc_network(tmp_path):
    """experiment=deeplabv2_voc + the official-checkpoint importer == Yude Wang's deeplabv2 (RTC / HSC), to 1e-4."""
    import importlib.util
    import json
    from pathlib import Path

    from wsss.checkpoints.deeplab import load_deeplabv2_release
    from wsss.checkpoints.imagenet import WeightsFormatError

    fix_dir = Path(__file__).parent / "fixtures" / "backbones"
    spec = importlib.util.spec_from_file_location("seeded", fix_dir / "seeded.py")
    seeded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeded)
    entries = json.loads((fix_dir / "deeplabv2_yude_keys.json").read_text())
    fix = np.load(fix_dir / "deeplabv2_yude_parity.npz")
    template = {e["name"]: torch.zeros(e["shape"], dtype=getattr(torch, e["dtype"])) for e in entries}
    official = seeded.seeded_state_dict(template, int(fix["seed"]))
    path = tmp_path / "deeplabv2_resnet101_VOCDataset_itr20000_all.pth"
    torch.save({"module." + k: v for k, v in official.items()}, path)

    cfg = compose_train_cfg(tmp_path, None, ["experiment=deeplabv2_voc", "dataset.root=/nonexistent",
                                             "dataset.pseudo_label_dir=/nonexistent"])
    model = build_method(cfg)
    load_deeplabv2_release(model, path)
    model.eval()
    x = torch.from_numpy(fix["input"])
    with torch.no_grad():
        logits = model.logits(x).double()
    np.testing.assert_allclose(logits.mean(dim=(2, 3)).numpy(), fix["logits__mean"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(logits[:, :, ::3, ::3].float().numpy(), fix["logits__sub"], rtol=0, atol=1e-4)

    torch.save({"conv1a.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "r38.pth")
    with pytest.raises(WeightsFormatError, match=r"r38\.pth: not a DeepLab v2.*ResNet-38"):
        load_deeplabv2_release(model, tmp_path / "r38.pth")


def test_multiscale_flip_validation_goes_through_the_shared_inference(tmp_path):
    """val_multiscale=true: per-scale softmax, resized to the image, un-flipped, summed, renormalised."""
    import torch.nn.functional as F

    cfg = compose_train_cfg(tmp_path, None, ["method=deeplab", "method.head={name: aspp_v2}",
                                             "method.val_multiscale=true",
                                             "method.inference={scales: [1.0, 0.5, 1.5], flip: true}"])
    torch.manual_seed(0)
    model = build_method(cfg).eval()
    image = torch.randn(2, 3, 40, 48)
    expected = 0
    with torch.no_grad():
        for s in (1.0, 0.5, 1.5):
            x = F.interpolate(image, size=(round(40 * s), round(48 * s)), mode="bilinear", align_corners=False) \
                if s != 1.0 else image
            for flip in (False, True):
                p = torch.softmax(model.logits(x.flip(-1) if flip else x), 1)
                p = F.interpolate(p.flip(-1) if flip else p, size=(40, 48), mode="bilinear", align_corners=False)
                expected = expected + p
        scores = model.multiscale_scores(image)
        pred = model.predict_labels({"image": image})
    torch.testing.assert_close(scores, expected / expected.sum(1, keepdim=True), atol=1e-6, rtol=0)
    assert torch.equal(pred, scores.argmax(1))
    with torch.no_grad():
        assert (scores - model.scores(image)).abs().max() > 1e-5  # the scales did change the scores
