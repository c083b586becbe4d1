"""HSC's contrast under DDP equals the reference's DataParallel step over one global batch: 2 CPU ranks (gloo),
one image each, give the single process's losses (the baseline terms as the mean of the ranks', the contrast
terms on every rank), its input gradients after DDP's averaging, and identical memory banks on both ranks."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import REPO
from test_hsc_training_parity import LEAVES, one_step

WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    import torch
    import torch.distributed as dist
    sys.path.insert(0, sys.argv[2])
    from hsc_train_case import make_case
    from test_hsc_training_parity import BANKS, LEAVES
    from wsss.methods.hsc_contrast import HierarchicalSemanticContrast
    from wsss.methods.hsc_losses import contrast_targets, hsc_baseline_losses, second_view

    def main(rank, dest):
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{sys.argv[3]}", rank=rank, world_size=2)
        torch.set_num_threads(1)
        case = make_case()
        contrast = HierarchicalSemanticContrast().train()
        contrast.load_reference_memories({k: case[k] for k in BANKS})
        local = {k: v[rank:rank + 1] for k, v in case.items() if not k.startswith("memobank")}
        leaves = {k: local[k].clone().requires_grad_(True) for k in LEAVES}
        image2, saliency2 = second_view(local["image"], local["saliency"])
        losses = hsc_baseline_losses(leaves["cam1"], leaves["cam_rv1"], leaves["cam2"], leaves["cam_rv2"],
                                     local["saliency"], saliency2, local["labels"])
        targets = contrast_targets(leaves["cam_rv1"], leaves["cam_rv2"], image2, local["labels"])
        losses.update(contrast(leaves["feat1_1"], leaves["feat1_2"], leaves["feat2_1"], leaves["feat2_2"],
                               targets, local["labels"]))
        sum(losses.values()).backward()
        out = {f"loss_{k}": np.float64(v.item()) for k, v in losses.items()}
        out.update({f"grad_{k}": (v.grad / dist.get_world_size()).numpy() for k, v in leaves.items()})
        out.update({"roi": contrast.roi_memory.numpy(), "cls": contrast.class_memory.numpy(),
                    "pix": contrast.pixel_memory.numpy()})
        # ranks with different batch sizes: rank 0 holds rows [0, 1], rank 1 row [2]; gradients reach their owner
        from wsss.methods.hsc_contrast import gather_batch
        mine = torch.arange(3.0).view(3, 1)[[0, 1]] if rank == 0 else torch.arange(3.0).view(3, 1)[[2]]
        mine = mine.clone().requires_grad_(True)
        everything = gather_batch(mine, True)
        (everything.flatten() * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
        out["uneven"] = everything.detach().numpy()
        out["uneven_grad"] = mine.grad.numpy()
        np.savez(f"{dest}/rank{rank}.npz", **out)
        dist.barrier()  # no rank tears the group down while the other still talks to it
        dist.destroy_process_group()

    if __name__ == "__main__":
        torch.multiprocessing.spawn(main, args=(sys.argv[1],), nprocs=2)
""")


@pytest.mark.slow
def test_ddp_contrast_equals_one_global_batch(tmp_path):
    script = tmp_path / "hsc_ddp.py"
    script.write_text(WORKER)
    with socket.socket() as s:  # a free port: a fixed one may be taken by a concurrent run
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(REPO / "tests"), str(port)],
                          capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    from hsc_train_case import make_case

    case = make_case()
    losses, leaves, contrast = one_step(case)
    for k in ("rsc", "csc", "psc"):  # computed on the gathered batch: every rank has the global value
        for r in range(2):
            assert abs(float(ranks[r][f"loss_{k}"]) - float(losses[k])) < 1e-5, (k, r)
    for k in ("cls", "sal", "er", "ecr"):  # per-image means: the ranks' mean is the global value
        assert abs(np.mean([float(ranks[r][f"loss_{k}"]) for r in range(2)]) - float(losses[k])) < 1e-5, k
    for k in LEAVES:
        got = np.concatenate([ranks[r][f"grad_{k}"] for r in range(2)])
        want = leaves[k].grad.numpy()
        np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=1e-4, err_msg=k)
    for r in range(2):
        np.testing.assert_allclose(ranks[r]["roi"], contrast.roi_memory.numpy(), atol=1e-6)
        np.testing.assert_allclose(ranks[r]["cls"], contrast.class_memory.numpy(), atol=1e-6)
        np.testing.assert_allclose(ranks[r]["pix"], contrast.pixel_memory.numpy(), atol=1e-6)
    assert not np.allclose(ranks[0]["cls"], torch.stack([case[b] for b in ("memobank1", "memobank2")]).numpy())
    for r in range(2):  # uneven batches: rank order kept, each rank's rows get every rank's gradient (2 ranks x w)
        np.testing.assert_array_equal(ranks[r]["uneven"].flatten(), [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(ranks[0]["uneven_grad"].flatten(), [2.0, 4.0])
    np.testing.assert_array_equal(ranks[1]["uneven_grad"].flatten(), [6.0])


def test_single_process_gather_is_the_identity():
    from wsss.methods.hsc_contrast import gather_batch

    t = torch.randn(3, 4)
    assert gather_batch(t, True) is t and gather_batch(t, False) is t
