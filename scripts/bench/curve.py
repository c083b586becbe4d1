"""Benchmark: the one-pass threshold curve vs re-reading and re-scoring every file per threshold.

    python scripts/bench/curve.py [--num 200] [--thresholds 60] [--workers 1] [--dir /tmp/wsss_bench_curve]
    python scripts/bench/curve.py --num 5000 --size 640x480 --classes 81 --unique 250 --workers 2 \
        --seam-subset 20 --dir /tmp/wsss_bench_coco      # COCO-sized (issue 16 item 5)

Generates ``--num`` images (default VOC-sized, 500x375, 21 classes): palette GT PNGs with a 255 band around
objects and SEAM-style score dicts holding the 1-3 classes of the image (smooth CAM-like maps in [0, 1] with
exact zeros outside the objects, so ties with t = 0 occur). ``--unique K``: only K distinct images, the other
files hard links to them (every file is still read and decoded; 5,000 COCO-sized score dicts would take ~12 GB).
Then times, in one process each:

* ``one-pass``: ``wsss.evaluate.evaluate_dir(..., curve_thresholds=...)`` (reads each file once;
  fastest of ``--repeat`` runs, since the reference's 60 passes average out load from other jobs);
* ``SEAM loop``: SEAM's ``evaluation.py --curve`` approach, re-implemented here: for every threshold
  re-read every file, build the 21-channel float32 tensor, argmax, count TP / P / T per class;
* ``per-threshold bincount``: the same re-reading per threshold but with one ``np.bincount``
  confusion per file instead of SEAM's per-class sums (a faster reference, for a fair ratio).

All three must give identical mIoU for every threshold (asserted to 1e-12); prints the ratios.
Measured (issue 16; 2 cores shared with other jobs, load ~3; ``--num 5000 --size 640x480 --classes 81
--unique 250 --workers 2 --seam-subset 8 --repeat 2``): the one-pass curve over 60 thresholds took 78.6 s (99.8 s
on the second run) for 5,000 COCO-sized masks with score dicts; SEAM's loop took 258.4 s on 8 images, i.e.
~161,500 s (44.9 h) for 5,000, 2,056x slower; the per-threshold bincount loop 175.6 s on 8 (~30.5 h, 1,397x);
both curves equal the one-pass curve exactly (max |diff| 0, mIoU and per-class IoU).

``--seam-subset M``: the two references run on the first M images only (SEAM's loop at 81 classes takes hours
on 5,000 files); their time is scaled to ``--num`` images by the per-image cost, and the curves are compared with
a one-pass run over the same M images.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from wsss.data.formats import VOC_CLASSES, save_score_dict, write_label_png  # noqa: E402
from wsss.metrics.folders import evaluate_dir  # noqa: E402

H, W, N = 375, 500, 21


def _smooth(rng, shape, cells=(6, 8)) -> np.ndarray:
    low = rng.random(cells).astype(np.float32)
    return np.asarray(Image.fromarray(low).resize((shape[1], shape[0]), Image.BILINEAR))


def make_image(rng):
    """GT with 1-3 elliptic objects, a 255 band, and a score dict over the image's classes."""
    classes = sorted(rng.choice(N - 1, size=rng.integers(1, 4), replace=False).tolist())
    gt = np.zeros((H, W), np.uint8)
    yy, xx = np.mgrid[:H, :W]
    masks = {}
    for k in classes:
        cy, cx = rng.uniform(0.2, 0.8) * H, rng.uniform(0.2, 0.8) * W
        ry, rx = rng.uniform(0.1, 0.35) * H, rng.uniform(0.1, 0.35) * W
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        gt[m] = k + 1
        masks[k] = m
    edge = np.zeros_like(gt, bool)
    edge[1:] |= gt[1:] != gt[:-1]
    edge[:, 1:] |= gt[:, 1:] != gt[:, :-1]
    gt[edge | np.roll(edge, 1, 0) | np.roll(edge, 1, 1)] = 255
    scores = {}
    for k in classes:
        m = masks[k].astype(np.float32)
        blurred = np.asarray(Image.fromarray(m).resize((W // 8, H // 8), Image.BILINEAR)
                             .resize((W, H), Image.BILINEAR))
        cam = np.clip(0.8 * blurred * _smooth(rng, (H, W)) + 0.3 * _smooth(rng, (H, W)) - 0.15, 0, None)
        scores[k] = (cam / max(float(cam.max()), 1e-5)).astype(np.float32)
    return gt, scores


def generate(root: Path, num: int, seed: int = 0, unique: int = 0) -> list[str]:
    stamp = root / "bench.json"
    meta = {"num": num, "seed": seed, "H": H, "W": W, "N": N, "unique": unique, "version": 2}
    ids = [f"bench_{i:06d}" for i in range(num)]
    if stamp.is_file() and json.loads(stamp.read_text()) == meta:
        return ids
    rng = np.random.default_rng(seed)
    distinct = unique if 0 < unique < num else num
    for n, name in enumerate(ids):
        gt_path, score_path = root / "SegmentationClass" / f"{name}.png", root / "scores" / f"{name}.npy"
        for path in (gt_path, score_path):
            if path.exists():
                path.unlink()
        if n < distinct:
            gt, scores = make_image(rng)
            write_label_png(gt_path, gt)
            save_score_dict(score_path, scores)
        else:
            source = ids[n % distinct]
            os.link(root / "SegmentationClass" / f"{source}.png", gt_path)
            os.link(root / "scores" / f"{source}.npy", score_path)
    stamp.write_text(json.dumps(meta))
    return ids


def seam_predict(path: Path, threshold: float) -> np.ndarray:
    """SEAM's rule for one score file: a constant background plane, argmax over all N rows."""
    d = np.load(path, allow_pickle=True).item()
    h, w = list(d.values())[0].shape
    tensor = np.zeros((N, h, w), np.float32)
    for key in d.keys():
        tensor[key + 1] = d[key]
    tensor[0] = threshold
    return np.argmax(tensor, axis=0)


def seam_loop(pred_dir: Path, gt_dir: Path, ids, threshold: float) -> np.ndarray:
    """SEAM evaluation.py for one threshold (single process): per-class IoU over all N classes."""
    TP, P, T = np.zeros(N, np.int64), np.zeros(N, np.int64), np.zeros(N, np.int64)
    for name in ids:
        predict = seam_predict(pred_dir / f"{name}.npy", threshold).astype(np.uint8)
        gt = np.array(Image.open(gt_dir / f"{name}.png"))
        cal = gt < 255
        mask = (predict == gt) * cal
        for i in range(N):
            P[i] += np.sum((predict == i) * cal)
            T[i] += np.sum((gt == i) * cal)
            TP[i] += np.sum((gt == i) * mask)
    return TP / (T + P - TP + 1e-10)


def bincount_loop(pred_dir: Path, gt_dir: Path, ids, threshold: float) -> np.ndarray:
    """Same per-threshold re-reading, with one bincount confusion per file."""
    conf = np.zeros(N * N, np.int64)
    for name in ids:
        predict = seam_predict(pred_dir / f"{name}.npy", threshold)
        gt = np.array(Image.open(gt_dir / f"{name}.png"))
        keep = gt < 255
        conf += np.bincount(gt[keep].astype(np.int64) * N + predict[keep], minlength=N * N)
    conf = conf.reshape(N, N)
    tp = np.diag(conf)
    return tp / (conf.sum(0) + conf.sum(1) - tp + 1e-10)


def main(argv=None) -> dict:
    global H, W, N
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=200)
    ap.add_argument("--thresholds", type=int, default=60)
    ap.add_argument("--workers", type=int, default=1, help="processes for the one-pass run")
    ap.add_argument("--dir", default="/tmp/wsss_bench_curve")
    ap.add_argument("--size", default=f"{W}x{H}", help="WIDTHxHEIGHT of every image")
    ap.add_argument("--classes", type=int, default=N, help="classes with background (COCO: 81)")
    ap.add_argument("--unique", type=int, default=0, help="distinct images; the rest are hard links (0: all)")
    ap.add_argument("--seam-subset", type=int, default=0, help="references on the first M images, scaled (0: all)")
    ap.add_argument("--skip-seam", action="store_true", help="time only the bincount reference")
    ap.add_argument("--repeat", type=int, default=3, help="one-pass runs; the fastest counts")
    args = ap.parse_args(argv)
    W, H = (int(v) for v in args.size.lower().split("x"))
    N = args.classes

    root = Path(args.dir)
    t0 = time.perf_counter()
    ids = generate(root, args.num, unique=args.unique)
    print(f"data: {args.num} images {W}x{H}, {N} classes in {root} ({time.perf_counter() - t0:.1f} s to prepare)",
          flush=True)
    pred_dir, gt_dir = root / "scores", root / "SegmentationClass"
    ts = [i / 100.0 for i in range(args.thresholds)]
    names = list(VOC_CLASSES) if N == len(VOC_CLASSES) else [f"class{i}" for i in range(N)]

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start

    for name in ids:  # warm the page cache so neither side pays for the first disk read
        (pred_dir / f"{name}.npy").read_bytes(), (gt_dir / f"{name}.png").read_bytes()
    runs = [timed(lambda: evaluate_dir(pred_dir, gt_dir, ids, "npy", N, names, curve_thresholds=ts,
                                       workers=args.workers)) for _ in range(max(1, args.repeat))]
    res, t_one = min(runs, key=lambda r: r[1])
    print(f"one-pass runs: {', '.join(f'{t:.2f}' for _, t in runs)} s", flush=True)
    print(f"one-pass curve ({args.workers} worker(s)): {t_one:.2f} s  "
          f"best t={res['curve']['best']['threshold']:.2f} mIoU={100 * res['curve']['best']['mIoU_seam']:.3f}%",
          flush=True)
    report = {"num_images": args.num, "size": [W, H], "classes": N, "unique": args.unique or args.num,
              "thresholds": len(ts), "one_pass_s": t_one, "workers": args.workers}
    ref_ids = ids[: args.seam_subset] if 0 < args.seam_subset < len(ids) else ids
    if len(ref_ids) < len(ids):  # the curve the references must equal: one pass over the same images
        res = evaluate_dir(pred_dir, gt_dir, ref_ids, "npy", N, names, curve_thresholds=ts, workers=1)
    ours = np.asarray(res["curve"]["mIoU_seam"])
    ours_per_class = np.asarray(res["curve"]["IoU_seam"])
    scale = len(ids) / len(ref_ids)

    refs = [("per-threshold bincount", bincount_loop)]
    if not args.skip_seam:
        refs.append(("SEAM loop", seam_loop))
    for label, fn in refs:
        ious, t_ref = timed(lambda: [fn(pred_dir, gt_dir, ref_ids, t) for t in ts])
        ref = np.asarray([iou.mean() for iou in ious])
        diff = max(float(np.abs(ref - ours).max()), float(np.abs(np.asarray(ious) - ours_per_class).max()))
        assert diff < 1e-12, f"{label}: curve differs by {diff}"
        t_full = t_ref * scale
        what = f" (timed on {len(ref_ids)} images, x{scale:.0f})" if scale > 1 else ""
        print(f"{label}: {t_full:.2f} s{what}  max |diff| (mIoU and per-class IoU) {diff:.1e}  "
              f"speed-up {t_full / t_one:.1f}x", flush=True)
        report[label] = {"seconds": t_full, "timed_images": len(ref_ids), "ratio": t_full / t_one,
                         "max_abs_diff": diff}
    return report


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
