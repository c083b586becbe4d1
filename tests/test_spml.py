"""SPML building blocks against independent, loop-by-loop computations on hand-made examples."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsss.methods.spml_losses import (image_similarity_loss, nearest_labelled_tags, segsort_loss,
                                      set_segsort_loss)
from wsss.models.segsort import build_segments, grid_labels, l2_normalize


def unit(rows):
    return l2_normalize(torch.tensor(rows, dtype=torch.float32))


def nca_by_hand(x, own, same_fn, protos, kappa, allowed_fn=lambda i, j: True):
    """-log(pos/(pos+neg)) per pixel, with python loops (the paper's definition)."""
    out = []
    for i in range(len(x)):
        e = [math.exp(kappa * float(x[i] @ protos[j])) if allowed_fn(i, j) else 0.0 for j in range(len(protos))]
        same = [j for j in range(len(protos)) if allowed_fn(i, j) and same_fn(i, j) and j != own[i]]
        pos = sum(e[j] for j in same) if same else e[own[i]]
        neg = sum(e[j] for j in range(len(protos)) if allowed_fn(i, j) and not same_fn(i, j))
        out.append(-math.log(pos / (pos + neg)))
    return out


X = unit([[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0.6, 0.8], [0.3, 0.3, 0.9]])
P = unit([[1, 0.1, 0], [0, 1, 0.2], [0.1, 0, 1], [0.7, 0.7, 0]])


def test_semantic_annotation_loss_matches_hand_computation():
    labels = torch.tensor([0, 0, 1, 2, 2])
    plabels = torch.tensor([0, 1, 2, 0])
    own = torch.tensor([0, 3, 1, 2, 2])
    got = segsort_loss(X, own, labels, P, plabels, 6.0)
    want = np.mean(nca_by_hand(X, own, lambda i, j: labels[i] == plabels[j], P, 6.0))
    assert got.item() == pytest.approx(want, rel=1e-5)
    # pixel 2 (label 1) has no other same-label segment: its positive is its own segment
    single = segsort_loss(X[2:3], own[2:3], labels[2:3], P, plabels, 6.0).item()
    e = [math.exp(6.0 * float(X[2] @ p)) for p in P]
    assert single == pytest.approx(-math.log(e[1] / sum(e)), rel=1e-5)


def test_semantic_cooccurrence_loss_matches_hand_computation():
    tags = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 1], [0, 1, 1], [0, 0, 1]])
    ptags = torch.tensor([[1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]])
    own = torch.tensor([0, 3, 1, 2, 2])
    got = set_segsort_loss(X, own, tags, P, ptags, 12.0)
    want = np.mean(nca_by_hand(X, own, lambda i, j: bool((tags[i] * ptags[j]).sum() > 0), P, 12.0))
    # float32 "sum of same minus own" (the reference's form) cancels digits at kappa 12
    assert got.item() == pytest.approx(want, rel=5e-4)


def test_image_similarity_loss_is_per_image_then_averaged():
    pix_batch = torch.tensor([0, 0, 0, 1, 1])
    seg_batch = torch.tensor([0, 0, 1, 1])
    regions = torch.tensor([5, 5, 7, 7])
    own = torch.tensor([0, 1, 1, 2, 3])
    got = image_similarity_loss(X, own, pix_batch, P, seg_batch, regions, 16.0)
    per = nca_by_hand(X, own, lambda i, j: regions[own[i]] == regions[j], P, 16.0,
                      allowed_fn=lambda i, j: pix_batch[i] == seg_batch[j])
    want = (np.mean(per[:3]) + np.mean(per[3:])) / 2
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_feature_affinity_tags_from_nearest_labelled_segment():
    protos = unit([[1, 0], [0.99, 0.14], [0, 1], [0.6, 0.8]])
    labels = torch.tensor([2, 5, 5, 1])      # 5 = unlabelled (num_classes)
    batch = torch.tensor([0, 0, 0, 1])
    tags = nearest_labelled_tags(protos, labels, batch, num_classes=5, threshold=0.95)
    assert tags[0].tolist() == [0, 0, 1, 0, 0]           # itself
    assert tags[1].tolist() == [0, 0, 1, 0, 0]           # close to segment 0 (cos 0.99)
    assert tags[2].tolist() == [1, 1, 1, 1, 1]           # nothing labelled near: all classes
    assert tags[3].tolist() == [0, 1, 0, 0, 0]


def test_grid_and_segments_match_a_per_image_loop():
    torch.manual_seed(0)
    b, d, h, w = 2, 4, 6, 8
    emb = torch.randn(b, d, h, w)
    labels = torch.randint(0, 3, (b, h, w))
    regions = torch.randint(0, 4, (b, h, w))
    valid = torch.ones(b, h, w, dtype=torch.bool)
    valid[1, :, -2:] = False
    grid = grid_labels([2, 2], (h, w))
    assert grid.unique().numel() == 4 and grid[0, 0] == 0 and grid[-1, -1] == 3
    segs = build_segments(emb, labels, regions, valid, [2, 2], iterations=3)
    # independent: per image, vMF k-means with python loops over clusters
    ys = torch.linspace(0, 1, h) - 0.5
    xs = torch.linspace(0, 1, w) - 0.5
    loc = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).view(-1, 2)
    keys = []
    for i in range(b):
        e = l2_normalize(emb[i].permute(1, 2, 0).reshape(-1, d))
        f = l2_normalize(torch.cat([e, loc], 1))
        m = valid[i].view(-1)
        lab = grid.view(-1).clone()
        for _ in range(3):
            protos = torch.stack([l2_normalize(f[(lab == k) & m].sum(0)) for k in range(4)])
            lab = (f @ protos.t()).argmax(1)
        for p in torch.nonzero(m).view(-1).tolist():
            keys.append((i, int(lab[p]), int(labels[i].view(-1)[p]), int(regions[i].view(-1)[p])))
    order = {k: n for n, k in enumerate(sorted(set(keys)))}
    assert segs.prototype.shape[0] == len(order)
    assert segs.pixel_segment.tolist() == [order[k] for k in keys]
    # prototypes are the mean directions of their members
    k0 = segs.pixel_segment == 0
    assert torch.allclose(segs.prototype[0], l2_normalize(segs.embedding[k0].sum(0)), atol=1e-6)


def test_scores_are_probabilities_and_missing_inputs_are_explained():
    from wsss.methods.spml import SPMLModule

    model = SPMLModule(backbone={"name": "tiny"}, num_classes=4, upsample=1).eval()
    image = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        s = model.scores(image)
        raw = model.raw_scores(image)
    assert s.shape == (2, 4, 40, 48)
    assert torch.allclose(s.sum(1), torch.ones(2, 40, 48), atol=1e-5)
    # multi-scale/flip inference sums raw scores; finalize turns the sum back into a mean
    assert torch.allclose(model.finalize_scores(raw + raw.flip(-1).flip(-1)), raw, atol=1e-6)
    with pytest.raises(KeyError, match="over-segmentation"):
        model.training_losses({"image": image, "cls": torch.zeros(2, 3), "weak": torch.zeros(2, 40, 48)})


def test_memory_bank_keeps_last_batches_and_lr_groups():
    from wsss.optim import method_optim
    from wsss.methods.spml import SPMLModule

    model = SPMLModule(backbone={"name": "tiny"}, num_classes=4, upsample=1, memory_bank_size=2,
                       kmeans={"num_clusters": [2, 2], "iterations": 2}, optim=method_optim("spml"))
    batch = {"image": torch.randn(2, 3, 32, 32), "cls": torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]),
             "weak": torch.full((2, 32, 32), 255), "segments": torch.zeros(2, 32, 32, dtype=torch.long)}
    batch["weak"][0, :8] = 1
    batch["weak"][1, :8] = 2
    for _ in range(3):
        losses = model.training_losses(batch)
    assert len(model._memory) == 2 and set(losses) == {"sem_ann", "sem_occ", "img_sim"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert int(model._memory[0]["batch"].min()) >= 4  # older batches get larger image ids
    groups = model.param_groups()
    lrs = sorted(g["lr"] / model.optim_cfg["lr"] for g in groups)
    assert lrs == [1.0, 2.0, 10.0, 20.0]
    assert all(g.get("weight_decay", None) == 0.0 for g in groups if g["lr"] / model.optim_cfg["lr"] in (2.0, 20.0))
