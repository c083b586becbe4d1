"""WS-FCN speed: the training step and one image's 8-view inference, wsss vs the reference (ws-fcn @ 73927f5).

Training step: forward (losses with the segmentation term on, as from the reference's epoch 7), backward, SGD update
with the reference's groups. wsss runs fp32 / bf16 (autocast) x NCHW / channels_last; the reference runs as written
(fp32, NCHW) via ``SoftMaxAE.forward(y, y_raw, labels)`` + ``MultiLabelSoftMarginLoss`` (``train.py`` ``step``).
Inference: one image's 8 views (4 scales x flip) padded to ``--pad``: wsss ``multiscale_raw_scores`` (all views in
one batch, crop / resize / merge on tensors) vs the reference's per-view forward passes (``--ref-batched`` times its
single batch of 8 instead) followed by ``MergeMultiScale._merge_masks``. Ratios are to the reference.

    python scripts/bench/wsfcn_step.py --ref /path/to/ws-fcn-export                 # CPU: 64 px, batch 2, pad 128
    python scripts/bench/wsfcn_step.py --ref /path/to/ws-fcn-export --device cuda --size 321 --batch 16 \\
        --pad 1024 --image 500x375 --iters 5

The reference export is never part of this repository; the script patches nothing in it (its ImageNet weight load is
replaced by a no-op at run time). Without ``--ref`` only wsss is timed. On CPU the clock is the process's CPU time
with one thread (default ``--threads 1``), so other jobs on a shared machine do not inflate it.

Recorded 2026-12-04, torch 2.14 CPU, resnet38d, 1 thread, machine load ~10 (``python scripts/bench/wsfcn_step.py
--ref /work/scratch_wsfcn --iters 2``: 64-px crops, batch 2; one 41x31 image, pad 128):

    training step               img/s   vs reference
    reference fp32 NCHW         1.711   x1.00
    wsss fp32 NCHW              1.728   x1.01
    wsss fp32 channels_last     1.304   x0.76
    wsss bf16 NCHW              2.359   x1.38
    wsss bf16 channels_last     1.852   x1.08
    inference, 8 padded views   s/img   vs reference (8 separate views)
    reference fp32              4.320   x1.00
    wsss fp32 (one batch)       3.937   x1.10
    wsss bf16 (one batch)       1.743   x2.48

The step is the shared ResNet-38 and decoder convolutions, identical work in both; wsss's PAMR shifts by slicing
instead of three convolutions with one-hot kernels. No GPU run: this session's device time was not enough to start
one (the 321-px / 1024-pad numbers on a GPU are still to be measured with the second command above).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch

from step_args import step_parser  # run as a script: its folder is on sys.path
from wsss.methods.wsfcn import WSFCNModule
from wsss.optim import method_optim

VOC_FEATURES = {"low": "b3", "final": "conv6"}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_batch(batch: int, size: int, device):
    g = torch.Generator().manual_seed(0)
    image = torch.randn(batch, 3, size, size, generator=g) * 0.8
    label = torch.zeros(batch, 20)
    for i in range(batch):
        label[i, (3 * i) % 20] = 1
        label[i, (7 * i + 5) % 20] = 1
    return image.to(device), label.to(device)


def wsss_model(device, pad: int) -> WSFCNModule:
    inference = {"scales": [1.0, 0.5, 1.5, 2.0], "flip": True, "classes": "predicted", "pred_with_labels": False,
                 "crf": "wsfcn", "cls_threshold": 0.1, "pad_size": [pad, pad]}
    return WSFCNModule(backbone={"name": "resnet38d"}, num_classes=21, features=VOC_FEATURES, seg_start_epoch=0,
                       eval_with_labels=False, inference=inference, optim=method_optim("wsfcn")).to(device)


def wsss_step_fn(size, batch, precision, channels_last, device):
    model = wsss_model(device, 1024).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.param_groups(), lr=1e-3, momentum=0.9)
    image, label = make_batch(batch, size, device)
    image = image.contiguous(memory_format=fmt)
    cast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if precision == "bf16"
            else contextlib.nullcontext())

    def step():
        with cast:
            losses = model.training_losses({"image": image, "cls": label})
            loss = sum(v.float() for v in losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def reference_model(ref: Path, device, pad: int):
    ref = Path(ref).resolve()
    sys.path.insert(0, str(ref))
    cwd = os.getcwd()
    os.chdir(ref)
    try:
        from core.config import cfg, cfg_from_file, cfg_from_list
        from models import get_model
        from models.backbones.base_net import BaseNet

        BaseNet._init_weights = lambda self, path: None  # no ImageNet file needed for timing
        cfg_from_file("configs/voc_resnet38.yaml")
        cfg_from_list(["TEST.PAD_SIZE", f"[{pad}, {pad}]"])
        return get_model(cfg.NET, num_classes=21).to(device), cfg
    finally:
        os.chdir(cwd)


def reference_step_fn(ref, size, batch, device):
    model, cfg = reference_model(ref, device, 1024)
    from losses import get_criterion

    criterion = get_criterion(cfg.NET.LOSS)
    opt = torch.optim.SGD(model.parameter_groups(cfg.NET.LR, cfg.NET.WEIGHT_DECAY), lr=cfg.NET.LR,
                          momentum=cfg.NET.MOMENTUM, weight_decay=cfg.NET.WEIGHT_DECAY)
    model.train()
    image, label = make_batch(batch, size, device)

    def step():
        raw = image.clone()
        for t, m, s in zip((0, 1, 2), MEAN, STD):
            raw[:, t].mul_(s).add_(m)
        cls_out, _, _, _, _, loss_mask = model(image, raw, label, 7)
        loss = criterion(cls_out, label).mean() + cfg.NET.MASK_LOSS_BCE * loss_mask.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def views_of(h: int, w: int, device):
    """One image's pyramid as wsss builds it (bilinear here: the resize method does not change the timing)."""
    g = torch.Generator().manual_seed(1)
    image = torch.randn(1, 3, h, w, generator=g)
    scales = (1.0, 0.5, 1.5, 2.0)
    return [torch.nn.functional.interpolate(image, size=(round(h * s), round(w * s)), mode="bilinear",
                                            align_corners=False).to(device) for s in scales]


def wsss_infer_fn(h, w, pad, precision, device):
    model = wsss_model(device, pad).eval()
    inputs = views_of(h, w, device)
    cast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if precision == "bf16"
            else contextlib.nullcontext())

    def run():
        with torch.no_grad(), cast:
            model.multiscale_raw_scores(inputs, (h, w), flip=True)
    return run


def reference_infer_fn(ref, h, w, pad, device, batched: bool):
    model, cfg = reference_model(ref, device, pad)
    from utils.inference_tools import MergeMultiScale

    model.eval()
    writer = MergeMultiScale(cfg.TEST, None, "/nonexistent", verbose=False)
    views, pads = [], []
    for x in views_of(h, w, device):
        for flip in (False, True):
            v = x.flip(-1) if flip else x
            vh, vw = v.shape[-2:]
            top, left = (pad - vh) // 2, (pad - vw) // 2
            views.append(torch.nn.functional.pad(v, (left, pad - vw - left, top, pad - vh - top)))
            pads.append(torch.tensor([top, left, vh, vw], dtype=torch.float32))
    batch = torch.cat(views)

    def run():
        with torch.no_grad():
            if batched:
                cls, masks = model(batch)
            else:
                outs = [model(v) for v in views]
                cls, masks = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
            labels = (torch.sigmoid(cls).max(0)[0] > cfg.TEST.FP_CUT_SCORE).type_as(masks)
            writer._merge_masks(masks.cpu(), labels.cpu(), pads, (h, w))
    return run


def time_it(step, iters: int, warmup: int, device) -> float:
    """Seconds per call; on CPU by process CPU time."""
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = clock()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (clock() - t0) / iters


def main(argv=None) -> int:
    ap = step_parser(__doc__.splitlines()[0], "export of ChunyanWang1/ws-fcn @ 73927f5 (outside this repo)", size=64)
    ap.add_argument("--pad", type=int, default=128, help="test canvas (the reference's TEST.PAD_SIZE is 1024)")
    ap.add_argument("--image", default="41x31", help="WxH of the inference image (VOC: 500x375)")
    ap.add_argument("--ref-batched", action="store_true", help="time the reference's 8 views as one batch")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    w, h = (int(v) for v in args.image.split("x"))
    step_s, infer_s = {}, {}
    if args.ref:
        step_s["reference fp32 NCHW"] = time_it(reference_step_fn(args.ref, args.size, args.batch, device),
                                                args.iters, args.warmup, device)
        infer_s["reference fp32"] = time_it(reference_infer_fn(args.ref, h, w, args.pad, device, args.ref_batched),
                                            args.iters, args.warmup, device)
    for precision in ("fp32", "bf16"):
        for cl in (False, True):
            key = f"wsss {precision} {'channels_last' if cl else 'NCHW'}"
            step_s[key] = time_it(wsss_step_fn(args.size, args.batch, precision, cl, device), args.iters,
                                  args.warmup, device)
        infer_s[f"wsss {precision}"] = time_it(wsss_infer_fn(h, w, args.pad, precision, device), args.iters,
                                               args.warmup, device)
    clock = f"CPU time, {args.threads} thread(s)" if device.type == "cpu" else "wall time"
    print(f"WS-FCN training step, {args.device} ({clock}), {args.size}px crops, batch {args.batch}")
    base = step_s.get("reference fp32 NCHW")
    for key, s in step_s.items():
        ratio = f"  x{base / s:.2f} vs reference" if base else ""
        print(f"  {key:28s} {args.batch / s:8.3f} img/s{ratio}")
    ref_kind = "one batch of 8" if args.ref_batched else "8 separate views"
    print(f"WS-FCN inference of one {w}x{h} image, 8 views padded to {args.pad} (reference: {ref_kind})")
    base = infer_s.get("reference fp32")
    for key, s in infer_s.items():
        ratio = f"  x{base / s:.2f} vs reference" if base else ""
        print(f"  {key:28s} {s:8.3f} s/img{ratio}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "step_images_per_s": {k: args.batch / s for k, s in step_s.items()},
                                         "infer_s_per_image": infer_s}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
