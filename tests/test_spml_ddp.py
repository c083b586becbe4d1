"""SPML under DDP pools every rank's segments as the reference's multi-GPU step does: 2 CPU processes (gloo) give
the losses and averaged gradients of one process that evaluates each image against both images' segments."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import torch

from conftest import REPO

SETUP = textwrap.dedent("""
    import torch
    from wsss.methods.spml import SPMLModule

    def make_model():
        torch.manual_seed(0)
        model = SPMLModule(backbone={"name": "tiny"}, num_classes=4, embedding_dim=16, head_channels=16, upsample=1,
                           dropout=0.0, kmeans={"num_clusters": [2, 2], "iterations": 3}, memory_bank_size=0,
                           losses={"feat_aff": {"weight": 0.2, "concentration": 4}})
        return model.eval()  # fixed BN statistics: per-rank and joint batches see the same normalisation

    def make_batch():
        g = torch.Generator().manual_seed(1)
        image = torch.randn(2, 3, 32, 32, generator=g)
        weak = torch.full((2, 32, 32), 255, dtype=torch.long)
        weak[0, 4:12, 4:20], weak[0, 20:28, 6:14], weak[1, 2:10, 18:30], weak[1, 16:30, 2:12] = 1, 0, 2, 3
        regions = (torch.arange(32)[:, None] // 8 * 4 + torch.arange(32)[None, :] // 8).expand(2, 32, 32).clone()
        cls = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
        return image, weak, regions, cls
""")

WORKER = SETUP + textwrap.dedent("""
    import json, os, sys
    import torch.distributed as dist

    def main(rank, dest):
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29533", rank=rank, world_size=2)
        torch.set_num_threads(1)
        model = make_model()
        image, weak, regions, cls = (t[rank:rank + 1] for t in make_batch())
        losses = model.losses_from_embedding(model.embed(image), image, weak, regions, cls)
        total = sum(losses.values())
        total.backward()
        grads = {}
        for name, p in model.named_parameters():  # what DDP does: average the gradients over ranks
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            dist.all_reduce(g)
            grads[name] = (g / 2).flatten()[:50].tolist()
        values = [None, None]
        dist.all_gather_object(values, {k: float(v) for k, v in losses.items()})
        if rank == 0:
            json.dump({"losses": values, "grads": grads}, open(dest, "w"))
        dist.destroy_process_group()

    if __name__ == "__main__":
        torch.multiprocessing.spawn(main, args=(sys.argv[1],), nprocs=2)
""")


def joint_reference():
    """One process: image r's pixels against its own and the other image's segments, losses averaged over r."""
    namespace: dict = {}
    exec(SETUP, namespace)
    from wsss.methods.spml import OTHER_RANK_OFFSET

    model = namespace["make_model"]()
    image, weak, regions, cls = namespace["make_batch"]()
    captured = {}
    original = model._contrastive_losses

    def capture(segs, c, others=None):
        captured["segs"] = segs
        return original(segs, c, others)

    segs = []
    for r in range(2):  # each image's segments, still attached to the graph
        model._contrastive_losses = capture
        model.losses_from_embedding(model.embed(image[r:r + 1]), image[r:r + 1], weak[r:r + 1], regions[r:r + 1],
                                    cls[r:r + 1])
        segs.append(captured["segs"])
    model._contrastive_losses = original
    per_rank, total = [], 0
    for r in range(2):
        o = segs[1 - r]
        tags = torch.cat([torch.zeros_like(cls[:1, :1]), cls[1 - r:2 - r]], 1)[:, 1:4][o.segment_batch]
        others = {"prototype": o.prototype, "prototype_loc": o.prototype_loc.detach(), "label": o.segment_label,
                  "tags": tags, "batch": o.segment_batch - OTHER_RANK_OFFSET}
        model.other_rank_segments = lambda s, c, others=others: others
        losses = model.losses_from_embedding(model.embed(image[r:r + 1]), image[r:r + 1], weak[r:r + 1],
                                             regions[r:r + 1], cls[r:r + 1])
        per_rank.append({k: float(v) for k, v in losses.items()})
        total = total + sum(losses.values()) / 2
    model.zero_grad()
    total.backward()
    grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)).flatten()[:50] for n, p in
             model.named_parameters()}
    return per_rank, grads


def test_ddp_pools_segments_across_ranks_like_the_reference(tmp_path):
    script = tmp_path / "spml_ddp.py"
    script.write_text(WORKER)
    dest = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(script), str(dest)], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads(dest.read_text())
    per_rank, grads = joint_reference()
    for r in range(2):
        assert ddp["losses"][r].keys() == per_rank[r].keys()
        for k, v in per_rank[r].items():
            assert abs(ddp["losses"][r][k] - v) < 1e-5, (r, k, ddp["losses"][r][k], v)
    assert any(abs(v) > 1e-6 for v in per_rank[0].values())
    checked = 0
    for name, g in grads.items():
        np.testing.assert_allclose(np.asarray(ddp["grads"][name]), g.numpy(), atol=1e-5, rtol=1e-4, err_msg=name)
        checked += int(g.abs().sum() > 0)
    assert checked > 5  # gradients reach the backbone and head through the pooled prototypes


def test_single_process_has_no_other_ranks():
    namespace: dict = {}
    exec(SETUP, namespace)
    model = namespace["make_model"]()
    assert model.other_rank_segments(None, None) is None
