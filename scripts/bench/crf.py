"""Dense-CRF throughput: images/s of ``wsss.postprocess.crf.refine_many`` with 1 and 2 workers.

    python scripts/bench/crf.py [--num-images 16] [--presets seam,rtc] [--workers 1,2] [--mode memory|files]

Inputs are generated 500x375 VOC-sized images with 1-3 present classes of smooth CAM-like
scores. ``--mode memory`` times ``refine_many`` on arrays against the seed repos' way: a serial Python
loop over images calling pydensecrf inline (SEAM ``infer_SEAM.py:_crf_with_alpha`` for ``seam``, RTC
``contrast_infer.py:_crf`` for ``rtc``), timed in the same run; the label maps must agree. ``--mode files``
times what users run, ``wsss.pseudo_label``'s library call over JPEGs and ``.npy`` score dicts on disk
(decoding, CRF and PNG writing in the workers; the parent only collects counts). Pool start-up is included
in the timings (it is part of what a user waits for).

Measured 2026-12-04 on the 2-core dev VM while it was otherwise idle (load average < 0.8), 16 images:
  seam, memory: reference 4.88 img/s, workers=1 4.86 (1.00x), workers=2 9.22 img/s (1.89x), identical maps
  seam, files:  workers=1 4.75 img/s, workers=2 8.77-9.04 img/s (1.85-1.90x)
  rtc,  memory: reference 1.22 img/s, workers=1 1.24 (1.02x), workers=2 2.31 img/s (1.90x), identical maps
  rtc,  files:  workers=1 1.57 img/s, workers=2 2.99 img/s (1.90x)
The 1.63x recorded on 2026-11-23 came from a run with other jobs on the same 2 cores: the same code, quiet,
gives 1.89x, and one rtc files run taken while other jobs started read 0.93x. Both modes reach the same ~1.9x,
so neither pickling the score maps to the workers (memory) nor decoding and writing in them (files) costs
measurably; the ~5% left to 2x (process start-up, the last image's tail) was not broken down further.
Ordering the jobs largest first made no measurable difference at this size (1.85-1.90x either way).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_labels, unary_from_softmax

from wsss.postprocess.crf import load_preset, refine_many

H, W, NUM_CLASSES = 375, 500, 21


def make_inputs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    jobs = []
    for _ in range(n):
        image = np.empty((H, W, 3), np.float32)
        for c in range(3):
            image[..., c] = 128 + 60 * np.sin(xx / rng.uniform(20, 60) + c) * np.cos(yy / rng.uniform(20, 60))
        k = int(rng.integers(1, 4))
        keys = sorted(rng.choice(20, size=k, replace=False).tolist())
        maps = []
        for _ in keys:
            cy, cx = rng.uniform(0, H), rng.uniform(0, W)
            sy, sx = rng.uniform(40, 120), rng.uniform(40, 150)
            cam = np.exp(-(((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))
            maps.append(cam)
            image[np.exp(-(((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2)) > 0.5] += rng.uniform(-60, 60, 3)
        fg = np.clip(np.stack(maps) + rng.uniform(0, 0.2, (k, H, W)), 0, 1).astype(np.float32)
        image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        jobs.append((image, fg, keys))
    return jobs


def reference_seam(image, fg, keys):
    """SEAM: bg = (1 - max)^4 over the present classes, imutils.crf_inference, argmax."""
    bg = np.power(1 - np.max(fg, axis=0, keepdims=True), 4)
    probs = np.concatenate((bg, fg), axis=0)
    n = probs.shape[0]
    d = dcrf.DenseCRF2D(W, H, n)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.copy(image), compat=10)
    q = np.array(d.inference(10)).reshape((n, H, W))
    return np.array([0] + [k + 1 for k in keys])[np.argmax(q, axis=0)].astype(np.uint8)


def reference_rtc(image, fg, keys):
    """RTC: 21-class tensor, bg 0.17, hard labels, unary_from_labels(gt_prob=0.7)."""
    tensor = np.zeros((NUM_CLASSES, H, W), np.float32)
    for i, k in enumerate(keys):
        tensor[k + 1] = fg[i]
    tensor[0] = 0.17
    labels = np.argmax(tensor, axis=0).astype(np.uint8)
    d = dcrf.DenseCRF2D(W, H, NUM_CLASSES)
    d.setUnaryEnergy(unary_from_labels(labels, NUM_CLASSES, gt_prob=0.7, zero_unsure=False))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(np.copy(image)), compat=10)
    q = np.array(d.inference(10)).reshape((NUM_CLASSES, H, W))
    return np.argmax(q, axis=0).astype(np.uint8)


REFERENCES = {"seam": reference_seam, "rtc": reference_rtc}


def write_folder(root, jobs):
    """A VOC-layout folder (``JPEGImages/``, split ``bench``) and its score dicts, as ``wsss.infer`` leaves them."""
    from pathlib import Path

    from PIL import Image

    from wsss.data.formats import save_score_dict, write_split_list

    root = Path(root)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "scores").mkdir(exist_ok=True)
    ids = [f"img_{i:05d}" for i in range(len(jobs))]
    for image_id, (image, fg, keys) in zip(ids, jobs):
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        save_score_dict(root / "scores" / f"{image_id}.npy", dict(zip(keys, fg)))
    write_split_list(root / "ImageSets" / "Segmentation" / "bench.txt", ids)
    return root


def pseudo_label_folder(root, preset, workers: int, out_name: str) -> float:
    """Seconds of ``wsss.pseudo_label``'s library call over the folder (decode, CRF and PNG writing in workers)."""
    import shutil

    from wsss.data.formats import VOC_CLASSES
    from wsss.data.voc import VOCLayout
    from wsss.labelling import make_pseudo_labels

    out = root / out_name
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    make_pseudo_labels(VOCLayout(root), "bench", root / "scores", out, preset, None, NUM_CLASSES,
                       VOC_CLASSES, workers=workers)
    return time.perf_counter() - t0


def bench_files(jobs, presets, workers_list, repeat: int) -> None:
    """What users run: ``python -m wsss.pseudo_label scores_dir=... workers=N`` over files on disk."""
    import tempfile
    from pathlib import Path

    n = len(jobs)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_folder(Path(tmp), jobs)
        for name in presets:
            preset = load_preset(name)
            base = None
            for workers in workers_list:
                t = min(pseudo_label_folder(root, preset, workers, f"pl_{workers}") for _ in range(max(1, repeat)))
                base = base or t
                print(f"[{name}] pseudo_label over files, workers={workers}: {n / t:6.2f} img/s "
                      f"({base / t:.2f}x workers={workers_list[0]})")


def _best(fn, repeat: int):
    times, out = [], None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument("--presets", default="seam,rtc")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeat", type=int, default=2, help="best of N timings (the machine may be shared)")
    parser.add_argument("--mode", default="memory", choices=("memory", "files"),
                        help="memory: refine_many on arrays vs the seed repos' loop; files: wsss.pseudo_label's "
                             "path over JPEGs and score files on disk")
    args = parser.parse_args(argv)
    jobs = make_inputs(args.num_images)
    n = len(jobs)
    print(f"{n} images of {W}x{H}, {sum(len(j[2]) for j in jobs) / n:.1f} present classes on average")
    if args.mode == "files":
        bench_files(jobs, args.presets.split(","), [int(w) for w in args.workers.split(",")], args.repeat)
        return
    for name in args.presets.split(","):
        preset = load_preset(name)
        t_ref, ref = _best(lambda: [REFERENCES[name](*job) for job in jobs], args.repeat)
        print(f"[{name}] reference serial loop (seed-repo code): {n / t_ref:6.2f} img/s")
        for workers in [int(w) for w in args.workers.split(",")]:
            t, ours = _best(lambda: list(refine_many(jobs, preset, num_classes=NUM_CLASSES, workers=workers)),
                            args.repeat)
            same = all(np.array_equal(a, b) for a, b in zip(ours, ref))
            print(f"[{name}] wsss refine_many workers={workers}: {n / t:6.2f} img/s  "
                  f"({t_ref / t:.2f}x the reference; label maps identical: {same})")


if __name__ == "__main__":
    main()
