"""SPML training-step throughput: wsss vs the reference step (twke18/SPML @ 0800afd) on the same input.

Two measurements, each images/s and the ratio to the reference:

* ``segsort``: everything after the network for one batch, from the same embedding tensor (B x 64 x h x w,
  requires grad): spherical k-means (6x6 grid, 10 iterations), segments, prototypes, the three VOC relations
  (semantic annotation incl. the softmax head's CE, co-occurrence, image similarity) and backward. This is
  where the implementations differ: the reference loops over images in Python (``segment_by_kmeans``, the
  image-similarity loss) and builds N x M masks; wsss batches k-means (``bmm``/``scatter_add``) and reduces
  the similarity matrix with matmuls.
* ``step``: a full training step (ResNet-101 deep stem + ASPP forward, the above, backward, SGD update),
  identical network work in both, so the ratio shows what the loss part is worth end to end.

The reference is imported at run time from ``--ref`` (an export of twke18/SPML, never part of this repo) with
one CPU shim (``gpu_id = ... .device.index or 0`` in ``spml/utils/segsort/common.py``), and its single-device
``gather_clustering_and_update_prototypes`` is reproduced inline (it uses ``scatter_gather`` across GPUs).

    git --git-dir=<mirror of twke18/SPML> archive 0800afd | tar -x -C /tmp/ref_spml  (+ the shim above)
    python scripts/bench/spml_step.py --ref /tmp/ref_spml                       # CPU, 1 thread
    python scripts/bench/spml_step.py --ref /tmp/ref_spml --device cuda --size 512 --batch 4 --iters 10

On CPU the clock is process CPU time with one thread (the 2-core VM is shared; wall time is noisy).
Recorded 2026-11-23 on that VM, torch CPU, 1 thread (``--size 256 --batch 2 --iters 3``; embeddings 64 x 64 x 64):

    kind     impl        images/s  ratio to reference
    segsort  wsss          1.563    x1.43   (after sharing the cosine matrix: 1.175 vs 0.799, x1.47, a busier moment)
    segsort  reference     1.093    x1.00
    step     wsss          0.293    x1.03
    step     reference     0.285    x1.00

(``python scripts/bench/spml_step.py --ref /tmp/ref_spml --iters 2``.) The full step is dominated by the
ResNet-101 (identical work); the loss part is ~1.45x faster, limited by the pixel x prototype similarity
matrices both implementations must build. The reference's ASPP keeps its own initialisation in the step
benchmark (only backbone weights are copied; same amount of work).

Measured 2026-12-04 on one NVIDIA H200 (torch 2.11; ``--device cuda --size 512 --batch 4 --iters 10``, fp32):

    kind     impl        images/s  ratio to reference
    segsort  wsss         20.97     x1.06
    segsort  reference    19.70     x1.00
    step     wsss         44.01     x1.17
    step     reference    37.47     x1.00

On the GPU the loss part is launch-bound at this size (many small kernels in both), so its CPU advantage shrinks.
"""
from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F
from types import SimpleNamespace as NS

from wsss.methods.spml import SPMLModule
from step_args import step_parser  # run as a script: its folder is on sys.path
from wsss.optim import method_optim


def make_inputs(batch: int, size: int, device):
    g = torch.Generator().manual_seed(0)
    image = (torch.randn(batch, 3, size, size, generator=g) * 0.8).to(device)
    weak = torch.full((batch, size, size), 21, dtype=torch.long)
    cls = torch.zeros(batch, 20)
    for i in range(batch):
        a, b = 1 + (3 * i) % 20, 1 + (7 * i + 5) % 20
        weak[i, size // 8: size // 2, size // 8: size // 2] = a
        weak[i, size // 2:, size // 2:] = b
        weak[i, : size // 16] = 0
        cls[i, a - 1] = cls[i, b - 1] = 1
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    regions = ((yy // 16) * ((size + 15) // 16) + xx // 16).expand(batch, size, size).clone()
    return image, weak.to(device), regions.to(device), cls.to(device)


def ref_config():
    return NS(network=NS(embedding_dim=64, label_divisor=2048, kmeans_num_clusters=[6, 6], kmeans_iterations=10),
              dataset=NS(num_classes=21, semantic_ignore_index=255),
              train=NS(sem_ann_loss_types="segsort", sem_occ_loss_types="segsort", img_sim_loss_types="segsort",
                       feat_aff_loss_types="none", sem_ann_concentration=6, sem_occ_concentration=12,
                       img_sim_concentration=16, feat_aff_concentration=0, sem_ann_loss_weight=1.0,
                       sem_occ_loss_weight=0.5, img_sim_loss_weight=0.1, feat_aff_loss_weight=0.0))


class Reference:
    """The reference's train.py step body (single device)."""

    def __init__(self, ref: str, device, full: bool):
        sys.path.insert(0, ref)
        from spml.models.embeddings.resnet_deeplab import resnet_101_deeplab
        from spml.models.predictions.segsort_softmax import segsort
        import spml.utils.segsort.common as common
        self.common = common
        cfg = ref_config()
        self.emb_model = resnet_101_deeplab(cfg).to(device) if full else None
        self.pred = segsort(cfg).to(device)
        self.cfg = cfg

    def after_network(self, emb, image, weak, regions, cls, clusters_fn):
        n = emb.shape[0]
        eo = {"embedding": emb}
        sem = F.interpolate(weak[:, None].float(), size=emb.shape[-2:], mode="nearest")[:, 0].long()
        inst = F.interpolate(regions[:, None].float(), size=emb.shape[-2:], mode="nearest")[:, 0].long()
        loc = self.common.generate_location_features(emb.shape[-2:], emb.device, "float") - 0.5
        eo.update(clusters_fn(emb, sem, inst, loc.unsqueeze(0).expand(n, *loc.shape)))
        ci, cb, cs, cinst = eo["cluster_index"], eo["cluster_batch_index"], eo["cluster_semantic_label"], \
            eo["cluster_instance_label"]
        cidx = cb * (ci.max() + 1) + ci
        _, cidx = torch.unique(cidx, return_inverse=True)
        lab_div = max([cinst.max() + 1, cs.max() + 1])
        labs = cb * lab_div ** 2 + cs * lab_div + cinst
        plabs, cidx = self.common.prepare_prototype_labels(labs, cidx, labs.max() + 1)
        protos = self.common.calculate_prototypes_from_labels(eo["cluster_embedding"], cidx)
        tags = torch.zeros(n, 256, dtype=torch.long, device=emb.device)
        tags[:, 1:21] = cls.long()
        tags[:, 0] = 1
        eo["cluster_index"] = cidx
        pb = plabs // lab_div ** 2
        targets = {"semantic_label": weak, "prototype": protos, "prototype_semantic_label": (plabs % lab_div ** 2) // lab_div,
                   "prototype_batch_index": pb, "semantic_tag": tags, "prototype_semantic_tag": tags[pb]}
        ann, occ, sim, _ = self.pred.losses(eo, targets)
        return ann + occ + sim

    def clusters(self, emb, sem, inst, loc):
        cfg = self.cfg
        labels = sem * 2048 + inst
        ignore = labels.max() + 1
        labels = labels.masked_fill(sem == 255, ignore)
        e, el, cl, ci, cb = self.common.segment_by_kmeans(emb, labels, [6, 6], local_features=loc,
                                                          ignore_index=ignore, iterations=10)
        return {"cluster_embedding": e, "cluster_embedding_with_loc": el, "cluster_semantic_label": cl // 2048,
                "cluster_instance_label": cl % 2048, "cluster_index": ci, "cluster_batch_index": cb}


def timed(fn, iters: int, warmup: int, device) -> float:
    for _ in range(warmup):
        fn()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    t = clock()
    for _ in range(iters):
        fn()
    sync()
    return (clock() - t) / iters


def main() -> None:
    ap = step_parser(__doc__.split("\n")[0], "export of twke18/SPML (with the CPU shim)", size=256)
    ap.add_argument("--skip-step", action="store_true", help="only the after-network part")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    image, weak, regions, cls = make_inputs(args.batch, args.size, device)
    h = args.size // 4
    emb0 = torch.randn(args.batch, 64, h, h, generator=torch.Generator().manual_seed(1)).to(device)
    model = SPMLModule(backbone={"name": "resnet101_deepstem", "output_stride": 8}, num_classes=21, head="aspp",
                       embedding_dim=64, upsample=2, dropout=0.75, kmeans={"num_clusters": [6, 6], "iterations": 10},
                       memory_bank_size=0, trainable_backbone=["res3", "res4", "res5"],
                       optim=method_optim("spml")).to(device)
    model.train()
    ref = Reference(args.ref, device, full=not args.skip_step) if args.ref else None
    rows = []

    def ours_segsort():
        emb = emb0.clone().requires_grad_(True)
        sum(model.losses_from_embedding(emb, image, weak, regions, cls).values()).backward()

    rows.append(("segsort", "wsss", timed(ours_segsort, args.iters, args.warmup, device)))
    if ref:
        def ref_segsort():
            emb = emb0.clone().requires_grad_(True)
            ref.after_network(emb, image, weak, regions, cls, ref.clusters).backward()
        rows.append(("segsort", "reference", timed(ref_segsort, args.iters, args.warmup, device)))
    if not args.skip_step:
        opt = torch.optim.SGD(model.param_groups(), lr=3e-3, momentum=0.9, weight_decay=5e-4)

        def ours_step():
            opt.zero_grad()
            loss = sum(model.losses_from_embedding(model.embed(image), image, weak, regions, cls).values())
            loss.backward()
            opt.step()
        rows.append(("step", "wsss", timed(ours_step, args.iters, args.warmup, device)))
        if ref:
            ref.emb_model.load_state_dict({f"resnet_backbone.{k}": v for k, v in model.backbone.state_dict().items()},
                                          resume=True)
            params = [p for g in ref.emb_model.get_params_lr() + ref.pred.get_params_lr() for p in g["params"]]
            ropt = torch.optim.SGD(params, lr=3e-3, momentum=0.9, weight_decay=5e-4)

            def ref_step():
                ropt.zero_grad()
                emb = ref.emb_model.generate_embeddings({"image": image})["embedding"]
                ref.after_network(emb, image, weak, regions, cls, ref.clusters).backward()
                ropt.step()
            rows.append(("step", "reference", timed(ref_step, args.iters, args.warmup, device)))
    base = {k: t for k, who, t in rows if who == "reference"}
    for kind, who, t in rows:
        ratio = f"x{base[kind] / t:.2f}" if kind in base else ""
        print(f"{kind:8s} {who:10s} {args.batch / t:8.3f} images/s  {ratio}")


if __name__ == "__main__":
    main()
