"""The reconstructed RS+EPM training: each piece on a hand-made case, every loss term finite with gradient, and
the overview figure's arrows (which map supervises which output, which ones carry no gradient)."""
from __future__ import annotations

import torch

from wsss.methods import recurseed_losses as L
from wsss.methods.recurseed import RecurSeedModule


def test_scg_spreads_a_class_over_the_pixels_that_look_like_its_seed():
    # two regions of different features; the CAM fires on one pixel of region A only
    feat = torch.zeros(1, 2, 4, 4)
    feat[0, 0, :, :2] = 1.0          # region A: left half
    feat[0, 1, :, 2:] = 1.0          # region B: right half
    cam = torch.zeros(1, 1, 4, 4)
    cam[0, 0, 1, 0] = 1.0
    out = L.scg(cam, [feat], first_th=0.5, second_th=0.1, foreground_th=0.3, background_th=0.05)
    assert out.shape == (1, 1, 4, 4)
    assert (out[0, 0, :, :2] > 0.7).all() and out[0, 0, 1, 0] == out.max()   # all of region A, peak at the seed
    assert torch.allclose(out[0, 0, :, 2:], torch.zeros(4, 2), atol=1e-5)  # none of region B
    # a class without any confident pixel gets no map
    assert not L.scg(torch.zeros(1, 1, 4, 4), [feat]).any()


def test_certain_filter_gives_background_class_and_uncertain_band():
    seeds = torch.tensor([[[[0.05, 0.3, 0.9]]], [[[0.0, 0.0, 0.6]]]]).permute(1, 0, 2, 3)  # 1 x 2 x 1 x 3
    keys = torch.tensor([[1.0, 1.0]])
    labels = L.certain_filter(seeds, keys, certain=0.55, uncertain=0.10)
    assert labels.tolist() == [[[0, 255, 1]]]
    # a class absent from the image label never wins
    assert L.certain_filter(seeds, torch.tensor([[1.0, 0.0]])).tolist() == [[[0, 255, 1]]]
    assert L.certain_filter(seeds, torch.tensor([[0.0, 1.0]])).tolist() == [[[0, 0, 2]]]


def test_edge_band_marks_pixels_where_the_winning_probability_jumps():
    probs = torch.zeros(1, 2, 1, 6)
    probs[0, 1] = torch.tensor([0.9, 0.9, 0.9, 0.1, 0.1, 0.1])
    probs[0, 0] = 1 - probs[0, 1]
    labels = L.edge_band(probs, threshold=0.3)
    assert labels.tolist() == [[[1, 1, 255, 255, 0, 0]]]
    soft = probs.clone()
    soft[0, 1] = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])  # smooth: no band
    soft[0, 0] = 1 - soft[0, 1]
    assert 255 not in L.edge_band(soft, threshold=0.3).flatten().tolist()


def test_paste_moves_the_chosen_class_of_one_image_onto_the_next():
    images = torch.stack([torch.full((3, 4, 4), 1.0), torch.full((3, 4, 4), 2.0)])
    src = torch.zeros(2, 4, 4, dtype=torch.long)
    src[0, :2, :2] = 1            # image 0: class 1 in the top-left corner, an uncertain pixel next to it
    src[0, 2, 0] = 255
    src[0, 3, 3] = 2              # image 0: class 2, not chosen
    labels = torch.full((2, 4, 4), 3, dtype=torch.long)
    chosen = torch.tensor([[True, False], [True, True]])
    mixed, mixed_labels, region = L.paste(images, labels, src, chosen)
    # image 1 receives image 0's class 1 (pixels, labels), keeps its own elsewhere; the band next to it is ignored
    assert torch.equal(region[1], src[0] == 1)
    assert (mixed[1][:, :2, :2] == 1.0).all() and (mixed[1][:, 2:, :] == 2.0).all()
    assert (mixed_labels[1][:2, :2] == 1).all() and mixed_labels[1][2, 0] == 255 and mixed_labels[1][3, 3] == 3
    maps = torch.stack([torch.full((2, 4, 4), 0.5), torch.zeros(2, 4, 4)])
    pasted = L.paste_maps(maps, region)
    assert torch.equal(pasted[1][:, :2, :2], torch.full((2, 2, 2), 0.5)) and not pasted[1][:, 2:].any()


def small_model() -> RecurSeedModule:
    torch.manual_seed(0)
    return RecurSeedModule(backbone={"name": "tiny", "widths": [8, 16, 16, 16]}, num_classes=4,
                           head={"width": 8, "low_channels": 8, "dilations": [1, 2, 3, 4]},
                           training={"seed_stride": 8, "pamr": {"num_iter": 2, "dilations": [1, 2]},
                                     "epm_start_epoch": 1})


def test_every_loss_is_finite_and_reaches_its_branch_and_the_targets_carry_no_gradient():
    model = small_model()
    batch = {"image": torch.randn(2, 3, 32, 32), "cls": torch.tensor([[1.0, 0, 1], [0, 1, 0]])}
    losses = L.training_losses(model, batch, model.train_cfg, epoch=1, generator=torch.Generator().manual_seed(0))
    assert set(losses) == {"cls", "rec", "seg", "mix_seg", "mix_rec"}
    head_params = dict(model.head.named_parameters())
    for name, value in losses.items():
        assert torch.isfinite(value) and value.item() > 0, name
        model.zero_grad()
        value.backward(retain_graph=True)
        cls_grad = model.classifier.weight.grad
        dec_grad = head_params["decoder.classifier.weight"].grad
        backbone_grad = any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
        assert backbone_grad, name
        if name in ("cls", "rec", "mix_rec"):   # CAM-side losses: the classifier learns, the decoder does not
            assert cls_grad is not None and cls_grad.abs().sum() > 0, name
            assert dec_grad is None or dec_grad.abs().sum() == 0, name
        else:                                   # L_seg, L^mix_seg supervise the decoder only
            assert dec_grad is not None and dec_grad.abs().sum() > 0, name
            assert cls_grad is None or cls_grad.abs().sum() == 0, name
    # before the EPM phase only the RecurSeed losses are on
    assert set(L.training_losses(model, batch, model.train_cfg, epoch=0)) == {"cls", "rec", "seg"}


def test_the_seeds_are_targets_without_gradient_made_from_the_cam():
    model = small_model()
    image = torch.randn(2, 3, 32, 48)
    keys = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    out = model.network(image)
    targets = L.recurseed_targets(model, out, image, keys, model.train_cfg)
    assert not any(t.requires_grad for t in targets.values())   # the figure's stop-gradient on M_scg, M_rs, M_seg
    assert not targets["rs"][:, 1][0].any() and not targets["rs"][1, 0].any()   # only the image's classes
    labels = set(targets["seg"].unique().tolist())
    assert labels <= {0, 1, 2, 3, 255}
    assert not L.edge_predict(out, image, keys, model.train_cfg).requires_grad   # M_ep is a target too
    # M_rs follows the CAM: a different CAM gives a different seed (it is RecurSeed's refinement of the CAM)
    with torch.no_grad():
        model.classifier.weight.mul_(-1)
    other = L.recurseed_targets(model, model.network(image), image, keys, model.train_cfg)
    assert not torch.allclose(other["rs"], targets["rs"])


def test_a_few_steps_on_one_batch_lower_the_classification_and_segmentation_losses():
    """The losses train the network (the whole synthetic run and its number are in docs/recurseed.md)."""
    model = small_model()
    torch.manual_seed(1)
    image = torch.randn(4, 3, 32, 48)
    image[:2, :, 8:24, 8:32] += 2.0              # class 1 is a bright box
    cls = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 0], [0, 0, 0]])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    first = None
    for _ in range(8):
        losses = L.training_losses(model, {"image": image, "cls": cls}, model.train_cfg, epoch=0)
        total = sum(losses.values())
        first = first if first is not None else {k: v.item() for k, v in losses.items()}
        opt.zero_grad()
        total.backward()
        opt.step()
    assert losses["cls"].item() < 0.8 * first["cls"]
    assert losses["seg"].item() < first["seg"]


def test_bare_method_recurseed_trains_on_the_synthetic_set_with_its_preset(train_cfg):
    """`python -m wsss.train method=recurseed`: the synthetic preset applies and a step of every loss runs."""
    from wsss.engine import build_datamodule, build_method, build_trainer

    cfg = train_cfg("method=recurseed", "method.training.epm_start_epoch=0", "dataset.batch_size=2",
                    "dataset.num_workers=0", "logger=none")
    assert cfg.method.head.low_level == "stage2" and cfg.method.training.seed_stride == 8   # the preset
    model = build_method(cfg)
    trainer = build_trainer(cfg, fast_dev_run=True, enable_progress_bar=False)
    trainer.fit(model, datamodule=build_datamodule(cfg))
    assert trainer.global_step == 1 and "train/mix_seg" in trainer.logged_metrics
