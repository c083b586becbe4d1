"""RTC training-step throughput: wsss vs the reference ``contrast_train.py`` step, same input, same weights.

One step = both views forward, all losses (segmentation branch on, as in the reference's last epoch),
backward, SGD update. wsss runs fp32 / bf16 (autocast) x channels_last off / on; the reference runs as
written (fp32, NCHW). The reference is timed in the same run (before and after the wsss settings, the mean
is used) when ``--ref`` points at an export of ChunyanWang1/RTC @ 9c777e0 (never part of this repo):
its loop body (``contrast_train.py`` lines 303-599) is read from that file at run time, 448/128 replaced by
``--size``/``--view2``, CUDA calls shimmed on CPU. Without ``--ref`` only wsss is timed.

    git --git-dir=<mirror of ChunyanWang1/RTC> archive 9c777e0 | tar -x -C /tmp/ref_rtc
    python scripts/bench/rtc_step.py --ref /tmp/ref_rtc                       # CPU: 112 px, batch 2
    python scripts/bench/rtc_step.py --ref /tmp/ref_rtc --device cuda --size 448 --view2 128 --batch 8 --iters 10

On CPU the clock is the process's CPU time with one thread (default ``--threads 1``): the machine these
numbers come from is a 2-core VM shared with other jobs, where wall time varied 5x between identical runs.
Recorded 2026-11-23, torch 2.15 CPU, resnet38d, 112 px crops, view 2 48 px, batch 2, 1 warm-up + 3 timed steps
(``python scripts/bench/rtc_step.py --ref /tmp/ref_rtc``), images/s and ratio to the reference step:

    wsss fp32 NCHW            0.548   x1.04
    wsss fp32 channels_last   0.486   x0.92
    wsss bf16 NCHW            0.934   x1.77
    wsss bf16 channels_last   0.808   x1.53
    reference fp32 NCHW       0.528   x1.00

With ``--no-seg`` (epochs 0-6: wsss skips the unused segmentation head, the reference runs it anyway):
wsss fp32 0.609 (x1.04), fp32 channels_last 0.582 (x1.00), bf16 0.988 (x1.69), bf16 channels_last 0.949
(x1.62), reference 0.584.

The step is dominated by the shared ResNet-38 convolutions (identical work in both); wsss's own parts
(batched VARM over both background scores with one affinity, vectorised prototypes/compensator instead of
the reference's per-class Python loop) are a few percent of it. No GPU was available to this session.

Measured 2026-12-04 on one NVIDIA H200 (torch 2.11), 448 px crops, view 2 128 px, batch 8, 10 timed steps, wall
time (``--device cuda --size 448 --view2 128 --batch 8 --iters 10``; the reference's ``label`` stays on the CPU as
its DataLoader leaves it):

    wsss fp32 NCHW            45.59   x1.63
    wsss fp32 channels_last   46.43   x1.66
    wsss bf16 NCHW            69.76   x2.49
    wsss bf16 channels_last   76.21   x2.72
    reference fp32 NCHW       28.01   x1.00
"""
from __future__ import annotations

import contextlib
import json
import sys
import textwrap
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from wsss.methods.rtc import RTCModule
from step_args import step_parser  # run as a script: its folder is on sys.path
from wsss.optim import method_optim

VOC_FEATURES = {"low": "conv3", "mid": "conv4", "high": "conv5", "final": "conv6"}

def make_batch(batch: int, size: int, device):
    g = torch.Generator().manual_seed(0)
    image = torch.randn(batch, 3, size, size, generator=g) * 0.8
    label = torch.zeros(batch, 20)
    for i in range(batch):
        label[i, (3 * i) % 20] = 1
        label[i, (7 * i + 5) % 20] = 1
    return image.to(device), label.to(device)


def wsss_step_fn(size: int, view2: int, batch: int, precision: str, channels_last: bool, device, seg: bool = True):
    model = RTCModule(backbone={"name": "resnet38d"}, num_classes=21, features=VOC_FEATURES, view2_size=view2,
                      seg_start_epoch=0 if seg else 10 ** 6, optim=method_optim("rtc")).to(device)
    model.train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.param_groups(), lr=0.01, momentum=5e-4)
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


def reference_step_fn(ref: Path, size: int, view2: int, batch: int, device, seg: bool = True):
    ref = Path(ref).resolve()
    sys.path.insert(0, str(ref))
    if device.type == "cpu":
        torch.Tensor.cuda = lambda self, *a, **k: self
        torch.nn.Module.cuda = lambda self, *a, **k: self
    pad = F.pad
    F.pad = lambda x, p, mode="constant", value=None: (pad(x, p, mode=mode) if mode != "constant"
                                                       else pad(x, p, mode=mode, value=value or 0.0))
    import network.resnet38_contrast as rn
    from network.VARM import VARM
    from tool import torchutils, visualization

    src = (ref / "contrast_train.py").read_text().splitlines()
    head = "\n".join(src[:185]).replace("from tensorboardX import SummaryWriter", "").replace(
        "from sklearn.metrics import average_precision_score", "")
    body = textwrap.dedent("\n".join(src[302:599]))
    body = body.replace("(448, 448)", "(H, H)").replace("size=(128, 128)", "size=(S, S)").replace("128 // 8", "S // 8")
    env = {"torch": torch, "F": F}
    exec(compile(head, "contrast_train_head", "exec"), env)
    model = rn.Net().to(device)
    groups = model.get_parameter_groups()
    lr, wd = 0.01, 5e-4
    opt = torchutils.PolyOptimizer([{"params": groups[0], "lr": lr, "weight_decay": wd},
                                    {"params": groups[1], "lr": 2 * lr, "weight_decay": 0},
                                    {"params": groups[2], "lr": 10 * lr, "weight_decay": wd},
                                    {"params": groups[3], "lr": 20 * lr, "weight_decay": 0}],
                                   lr=lr, weight_decay=wd, max_step=10 ** 6)
    model.train()

    class Wrap:
        module = model

        def __call__(self, *a, **k):
            return model(*a, **k)

    image, label = make_batch(batch, size, device)
    box = torch.tensor([[0, size, 0, size]] * batch, dtype=torch.int16)
    code = compile(body, "contrast_train_body", "exec")

    class Args:
        bg_threshold = 0.2

    varm = VARM(num_iter=10, dilations=[1, 2, 4, 8, 12, 24]).to(device)

    def step():
        env.update(pack=["n", image.clone(), label.clone().cpu(), box], model=Wrap(), args=Args, ep=7 if seg else 0,
                   H=size, S=view2,
                   varm=varm, visualization=visualization)
        exec(code, env)
        opt.zero_grad()
        env["loss"].backward()
        opt.step()
    return step


def time_it(step, iters: int, warmup: int, batch: int, device) -> float:
    """Images/s; on CPU by *process CPU time*, which other jobs on a shared machine do not inflate."""
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
    return batch * iters / (clock() - t0)


def main(argv=None) -> int:
    ap = step_parser(__doc__.splitlines()[0], "export of ChunyanWang1/RTC (outside this repo)", size=112)
    ap.add_argument("--view2", type=int, default=48)
    ap.add_argument("--no-seg", action="store_true",
                    help="epochs 0-6 of the recipe: no segmentation loss (the reference still runs the seg head)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    res = {}
    ref_runs = []
    if args.ref:
        ref_runs.append(time_it(reference_step_fn(args.ref, args.size, args.view2, args.batch, device, not args.no_seg),
                                args.iters, args.warmup, args.batch, device))
    for precision in ("fp32", "bf16"):
        for cl in (False, True):
            key = f"wsss {precision} {'channels_last' if cl else 'NCHW'}"
            step = wsss_step_fn(args.size, args.view2, args.batch, precision, cl, device, not args.no_seg)
            res[key] = time_it(step, args.iters, args.warmup, args.batch, device)
            del step
    if args.ref:
        ref_runs.append(time_it(reference_step_fn(args.ref, args.size, args.view2, args.batch, device, not args.no_seg),
                                args.iters, args.warmup, args.batch, device))
        res["reference fp32 NCHW"] = sum(ref_runs) / len(ref_runs)
    base = res.get("reference fp32 NCHW")
    clock = f"CPU time, {args.threads} thread(s)" if device.type == "cpu" else "wall time"
    phase = "epochs 0-6 (no seg loss)" if args.no_seg else "last epoch (seg loss on)"
    print(f"RTC training step, {phase}, {args.device} ({clock}), {args.size}px crops, view 2 {args.view2}px, "
          f"batch {args.batch}")
    for key, ips in res.items():
        ratio = f"  x{ips / base:.2f} vs reference" if base else ""
        print(f"  {key:28s} {ips:8.3f} img/s{ratio}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "images_per_s": res},
                                        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
