"""HSC loss computation: wsss (``hsc_losses`` + vectorised ``hsc_contrast``) vs the reference's, same tensors.

One "step" here = everything ``train_hsc`` computes after the network (Wu0409/HSC_WSSS@402ee60
``module/train.py`` :536-579): second view of image and saliency, classification and adaptive min-pooling, EPS
saliency losses on both views' CAM and PCM CAM, SEAM ER/ECR, the contrast targets (normalised CAMs, label CRF on
every image of both views) and the three contrast levels with their memory updates, then backward to the
network outputs. The network forward/backward is the same ResNet-38 in both and is left out, so the ratio is
the loss code's own. Inputs are the reference's training shapes: view 1 CAM 56 x 56 (448 crop), view 2 16 x 16,
projector features 128-d / 256-d, batch ``--batch`` (the reference's 12 by default).

The reference is timed when ``--ref`` points at an export of its ``module/``, ``utils/``, ``network/`` (never
part of this repo); on CPU its CUDA calls are removed in a temporary copy (as in
``tests/fixtures/hsc/train/make_train_fixture.py``). Each side runs ``--iters`` timed steps after ``--warmup``.

    python scripts/bench/hsc_step.py --ref /tmp/hsc_ref                  # CPU, 1 thread, CPU time
    python scripts/bench/hsc_step.py --ref /tmp/hsc_ref --device cuda    # wall time

Recorded 2026-12-04, torch 2.14.1 CPU, a 2-core VM shared with other jobs, 1 thread, CPU time, batch 12,
448 / 128 views, 2 warm-up + 5 timed steps (``python scripts/bench/hsc_step.py --ref /tmp/hsc_ref``), three runs:

    reference  0.198 / 0.192 / 0.187 s per step
    wsss       0.120 / 0.114 / 0.113 s per step      x1.66 / x1.68 / x1.65

Where the time goes (wsss): the 24 label CRFs (pydensecrf, one per image and view; wsss builds each image's
kernels once for both views), the 56 -> 16 resize of 384 feature channels and its backward, the EPS and SEAM
terms on 56 x 56 CAMs; the three contrast levels themselves are a few ms. The reference's per-class loops
(``get_CSC_loss`` up to 20 classes x 4 CE terms, ``get_PSC_loss`` 2 x 21 prototypes) and its per-image CRF
kernels make up the difference. No GPU number: this session's device time was not spent on it.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from step_args import step_parser  # run as a script: its folder is on sys.path
from wsss.methods.hsc_contrast import HierarchicalSemanticContrast
from wsss.methods.hsc_losses import contrast_targets, hsc_baseline_losses, second_view

LEAVES = ("cam1", "cam_rv1", "cam2", "cam_rv2", "feat1_1", "feat1_2", "feat2_1", "feat2_2")
BANKS = {"memobank1": (21, 256), "memobank_fb": (2, 256), "memobank1_p": (21, 128), "memobank2": (21, 256),
         "memobank1_fb": (2, 256), "memobank2_p": (21, 128)}


def make_inputs(batch: int, size: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    h1, h2 = size // 8, 16

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    labels = torch.zeros(batch, 20)
    for i in range(batch):
        labels[i, (3 * i) % 20] = 1
        labels[i, (7 * i + 5) % 20] = 1
    x = {"labels": labels, "image": randn(batch, 3, size, size, scale=0.8),
         "saliency": torch.rand(batch, 1, size, size, generator=g),
         "cam1": randn(batch, 21, h1, h1, scale=3), "cam_rv1": randn(batch, 21, h1, h1, scale=2),
         "cam2": randn(batch, 21, h2, h2, scale=3), "cam_rv2": randn(batch, 21, h2, h2, scale=2),
         "feat1_1": randn(batch, 128, h1, h1).abs(), "feat1_2": randn(batch, 256, h1, h1),
         "feat2_1": randn(batch, 128, h2, h2).abs(), "feat2_2": randn(batch, 256, h2, h2)}
    x.update({k: randn(*shape) for k, shape in BANKS.items()})
    return {k: v.to(device) for k, v in x.items()}


def wsss_step_fn(x: dict, device):
    contrast = HierarchicalSemanticContrast().to(device).train()
    contrast.load_reference_memories({k: x[k] for k in BANKS})

    leaves = {k: x[k].clone().requires_grad_(True) for k in LEAVES}

    def step():
        for v in leaves.values():
            v.grad = None
        image2, saliency2 = second_view(x["image"], x["saliency"])
        losses = hsc_baseline_losses(leaves["cam1"], leaves["cam_rv1"], leaves["cam2"], leaves["cam_rv2"],
                                     x["saliency"], saliency2, x["labels"])
        targets = contrast_targets(leaves["cam_rv1"], leaves["cam_rv2"], image2, x["labels"])
        losses.update(contrast(leaves["feat1_1"], leaves["feat1_2"], leaves["feat2_1"], leaves["feat2_2"],
                               targets, x["labels"]))
        sum(losses.values()).backward()
        return {k: float(v.detach()) for k, v in losses.items()}

    return step


def reference_step_fn(ref: Path, x: dict, device):
    work = Path(tempfile.mkdtemp(prefix="hsc_ref_"))
    for sub in ("module", "utils", "network"):
        shutil.copytree(ref / sub, work / sub)
    if device.type == "cpu":
        for p in (work / "module").glob("*.py"):
            s = re.sub(r"\.cuda\((non_blocking=True)?\)", "", p.read_text()).replace("device='cuda'", "device='cpu'")
            p.write_text(s)
    for sub in ("utils", "network"):
        (work / sub / "__init__.py").touch()
    sys.path.insert(0, str(work))
    from module import loss_helper
    from module import train as T

    for k in BANKS:
        setattr(T, k, x[k].clone())

    leaves = {k: x[k].clone().requires_grad_(True) for k in LEAVES}

    def step():
        for v in leaves.values():
            v.grad = None
        cam1, cam_rv1, cam2, cam_rv2 = (leaves[k] for k in ("cam1", "cam_rv1", "cam2", "cam_rv2"))
        img, saliency, label = x["image"], x["saliency"], x["labels"]
        img2 = F.interpolate(img, size=(128, 128), mode="bilinear", align_corners=True)
        saliency2 = F.interpolate(saliency, size=(128, 128), mode="bilinear", align_corners=True)
        pred1, pred2 = cam1.mean((2, 3)), cam2.mean((2, 3))
        cls = (F.multilabel_soft_margin_loss(pred1[:, :-1], label)
               + F.multilabel_soft_margin_loss(pred2[:, :-1], label)) / 2
        sal = sum(loss_helper.get_eps_loss(c, s, label, 0.5, 0.5, intermediate=False)
                  for c, s in ((cam1, saliency), (cam2, saliency2))) / 2
        sal_rv = sum(loss_helper.get_eps_loss(c, s, label, 0.5, 0.5, intermediate=False)
                     for c, s in ((cam_rv1, saliency), (cam_rv2, saliency2))) / 2
        lab = torch.cat((label, torch.ones((img.shape[0], 1), device=label.device)), dim=1)[:, :, None, None]
        amp = (loss_helper.adaptive_min_pooling_loss((cam_rv1 * lab)[:, :-1])
               + loss_helper.adaptive_min_pooling_loss((cam_rv2 * lab)[:, :-1])) / 2
        er, ecr = loss_helper.get_er_loss(cam1, cam2, cam_rv1, cam_rv2, lab)
        rsc, csc, psc = T.get_hsc_loss(cam_rv1, cam_rv2, leaves["feat1_1"], leaves["feat1_2"], leaves["feat2_1"],
                                       leaves["feat2_2"], img2, label, bg_thres=0.10)
        losses = {"cls": cls + amp, "sal": sal + sal_rv, "er": er, "ecr": ecr, "rsc": rsc, "csc": csc, "psc": psc}
        sum(losses.values()).backward()
        return {k: float(v.detach()) for k, v in losses.items()}

    return step


def time_it(step, iters: int, warmup: int, device) -> float:
    """Seconds per step (CPU time of this process on CPU, wall time with synchronisation on CUDA)."""
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = clock()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (clock() - start) / iters


def main(argv=None) -> int:
    ap = step_parser(__doc__.splitlines()[0], "an export of Wu0409/HSC_WSSS@402ee60 (module/, utils/, network/)",
                     448)
    ap.set_defaults(batch=12, iters=5, warmup=2)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    x = make_inputs(args.batch, args.size, device)
    ours = wsss_step_fn(x, device)
    result = {"device": str(device), "batch": args.batch, "size": args.size, "threads": args.threads}
    if args.ref:
        ref = reference_step_fn(Path(args.ref), x, device)
        first_ours, first_ref = ours(), ref()  # the same memories before the first step: the same losses
        result["max_loss_difference_first_step"] = max(abs(first_ours[k] - first_ref[k]) for k in first_ours)
        t_ref = time_it(ref, args.iters, args.warmup, device)
    t_ours = time_it(ours, args.iters, args.warmup, device)
    if args.ref:
        t_ref = (t_ref + time_it(ref, args.iters, 0, device)) / 2  # before and after ours: load drift averaged
        result.update(reference_s=round(t_ref, 5), speedup=round(t_ref / t_ours, 3))
    result["wsss_s"] = round(t_ours, 5)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
