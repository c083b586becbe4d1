"""HSC's hierarchical semantic contrast (ROI, class and pixel level) with its memory banks, vectorised.

Reference: Wu0409/HSC_WSSS@402ee60 ``module/train.py`` ``get_RSC_loss`` (:55-140), ``get_CSC_loss`` (:144-263),
``get_PSC_loss`` (:267-399, memories :402-411), ``module/loss_helper.py`` ``SimMinLoss``. The reference loops over
classes and images in Python; here each level is a few batched tensor operations with the same values, including
the one order effect of its class loop: class ``c``'s loss sees the memory rows of the batch's classes ``< c``
already updated (the loop updates row ``c`` after its loss).

Under DDP the reference's DataParallel step (the loss over the outputs gathered from every device, i.e. one global
batch) is reproduced by gathering the inputs of this module from every rank, differentiably for the features
(``torch.distributed.nn.functional.all_gather``; its backward sums every rank's gradient), and computing the
global loss on every rank: the DDP average of the ranks' gradients is then the global loss's gradient, the batch
prototypes are the global batch's and every rank applies the same memory update.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsss.methods.hsc_losses import downsample_features

# module/train.py: RSC l1 = 0.5 (:59); CSC l, temp, h = 0.5, 0.1, 16 (:148), topk k=128 (:162, :168);
# PSC l1 = 0.5 (:269), k = h*w // 16 (:294, :307), InfoNCE temperature 0.1 (:334-387); SimMinLoss clamp
# (loss_helper.py:100); loss weights 0.1 (:140), 0.1 / 4 (:263), 0.1 per PSC term (:342, :353, :372, :390).
DEFAULTS = {"roi_momentum": 0.5, "class_momentum": 0.5, "class_temperature": 0.1, "class_topk": 128,
            "class_memory_topk": 16, "pixel_momentum": 0.5, "pixel_temperature": 0.1, "pixel_topk_divisor": 16,
            "sim_clamp": (0.0005, 0.9995), "rsc_weight": 0.1, "csc_weight": 0.025, "psc_weight": 0.1}


def _world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_batch(t: Tensor, differentiable: bool) -> Tensor:
    """``t`` (batch first) of every rank concatenated in rank order; ranks may hold different batch sizes.
    ``differentiable``: gradients reach every rank's tensor (summed over the ranks that use it)."""
    if _world() < 2:
        return t
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather as all_gather_with_grad

    world = _world()
    n = torch.tensor([t.shape[0]], device=t.device)
    counts = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(counts, n)
    most = int(max(int(c) for c in counts))
    padded = t if t.shape[0] == most else torch.cat([t, t.new_zeros((most - t.shape[0],) + tuple(t.shape[1:]))])
    if differentiable:
        parts = all_gather_with_grad(padded.contiguous())
    else:
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[: int(c)] for p, c in zip(parts, counts)])


def info_nce(feat: Tensor, prototypes: Tensor, target: Tensor, temperature: float) -> Tensor:
    """Mean over pixels of ``-log(exp(f.p_y / t) / sum_j exp(f.p_j / t))`` (train.py:334-390)."""
    return F.cross_entropy(feat @ prototypes.t() / temperature, target)


class HierarchicalSemanticContrast(nn.Module):
    """The three contrast levels; the memories are buffers (checkpointed with the model).

    Buffers: ``roi_memory`` 2 views x {bg, fg} x D (``memobank_fb``, ``memobank1_fb``), ``class_memory`` 2 x 21 x D
    (``memobank1/2``), ``pixel_memory`` 2 x 21 x P (``memobank1_p/2_p``); all drawn from a standard normal as the
    reference does at import (train.py:402-411). Channel ``num_classes - 1`` is the background."""

    def __init__(self, num_classes: int = 21, roi_dim: int = 256, pixel_dim: int = 128, size: int = 16,
                 **cfg):
        super().__init__()
        unknown = set(cfg) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"hsc contrast: unknown keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        self.cfg = {**DEFAULTS, **cfg}
        self.num_classes, self.size = int(num_classes), int(size)
        self.register_buffer("roi_memory", torch.randn(2, 2, roi_dim))
        self.register_buffer("class_memory", torch.randn(2, num_classes, roi_dim))
        self.register_buffer("pixel_memory", torch.randn(2, num_classes, pixel_dim))

    # ----- ROI level ------------------------------------------------------------------------------------------
    def _roi_pools(self, feat: Tensor, pseudo: Tensor) -> Tensor:
        """Per image, the bg and fg region means of the width-normalised features (the reference's ``dim=-1``
        quirk), L2-normalised (eps 1e-5): N x 2 x D."""
        f = F.normalize(feat, dim=-1)
        bg = (pseudo == self.num_classes - 1).to(f.dtype)
        masks = torch.stack([bg, 1 - bg], 1)
        pooled = torch.einsum("nchw,nkhw->nkc", f, masks) / (masks.flatten(2).sum(-1, keepdim=True) + 1e-5)
        return F.normalize(pooled, dim=-1, eps=1e-5)

    def _sim_min(self, bg: Tensor, fg: Tensor) -> Tensor:
        lo, hi = self.cfg["sim_clamp"]
        sim = (F.normalize(bg, dim=1) @ F.normalize(fg, dim=1).t()).clamp(lo, hi)
        return -torch.log(1 - sim).mean()

    def roi_level(self, feat1: Tensor, feat2: Tensor, pseudo1: Tensor, pseudo2: Tensor, update: bool) -> Tensor:
        p1, p2 = self._roi_pools(feat1, pseudo1), self._roi_pools(feat2, pseudo2)
        intra = (self._sim_min(p1[:, 0], p1[:, 1]) + self._sim_min(p2[:, 0], p2[:, 1])) / 2
        cross = (self._sim_min(p1[:, 0], p2[:, 1]) + self._sim_min(p2[:, 0], p1[:, 1])) / 2
        mem = self.roi_memory.detach()
        fore = ((mem[0, 1] - p1[:, 1]).abs().mean() + (mem[1, 1] - p2[:, 1]).abs().mean()) / 2
        back = ((mem[0, 0] - p1[:, 0]).abs().mean() + (mem[1, 0] - p2[:, 0]).abs().mean()) / 2
        if update:
            lam = self.cfg["roi_momentum"]
            with torch.no_grad():
                self.roi_memory.copy_(lam * torch.stack([p1.mean(0), p2.mean(0)]) + (1 - lam) * self.roi_memory)
        return self.cfg["rsc_weight"] * (intra + cross + fore + back)

    # ----- class level ----------------------------------------------------------------------------------------
    def _class_reps(self, feat: Tensor, cam: Tensor, lab: Tensor):
        """Top-k (over the batch) softmax-weighted class representations, and the top-16 ones for the memory."""
        c = self.num_classes - 1
        soft = F.softmax(cam * lab, dim=1)[:, :c].transpose(0, 1).reshape(c, -1)
        # the reference's k = 128 needs batch x 16 x 16 >= 128 positions; small (CPU) sizes take all there are
        values, index = torch.topk(soft, k=min(int(self.cfg["class_topk"]), soft.shape[1]), dim=-1)
        fea = feat.permute(0, 2, 3, 1).reshape(-1, feat.shape[1])[index]  # C x k x D
        denom = values.sum(-1, keepdim=True)
        rep = F.normalize((values[..., None] * fea).sum(1) / denom, dim=-1)
        h = min(int(self.cfg["class_memory_topk"]), values.shape[1])
        with torch.no_grad():
            high = F.normalize((values[:, :h, None] * fea[:, :h].detach()).sum(1) / denom.detach(), dim=-1)
        return rep, high

    def _class_ce(self, rep: Tensor, classes: Tensor, old: Tensor, new: Tensor) -> Tensor:
        """Sum over ``classes`` of the CE (target: own memory row) over all memory rows, the rows of batch classes
        before ``c`` taken from ``new`` as in the reference loop."""
        s_old = F.cosine_similarity(rep[:, None, :], old[None], dim=-1)
        s_new = F.cosine_similarity(rep[:, None, :], new[None], dim=-1)
        rows = torch.arange(old.shape[0], device=rep.device)
        updated = torch.zeros(old.shape[0], dtype=torch.bool, device=rep.device)
        updated[classes] = True
        use_new = updated[None, :] & (rows[None, :] < classes[:, None])
        logits = torch.where(use_new, s_new, s_old) / self.cfg["class_temperature"]
        return F.cross_entropy(logits, classes, reduction="sum")

    def class_level(self, feat1: Tensor, feat2: Tensor, cam1: Tensor, cam2: Tensor, labels: Tensor,
                    update: bool) -> Tensor:
        lab = torch.cat([labels, labels.new_ones(labels.shape[0], 1)], 1)[:, :, None, None]
        classes = torch.nonzero(labels.sum(0) > 0).flatten()
        if classes.numel() == 0:
            return feat1.sum() * 0
        rep1, high1 = self._class_reps(feat1, cam1, lab)
        rep2, high2 = self._class_reps(feat2, cam2, lab)
        rep1, rep2 = rep1[classes], rep2[classes]
        lam = self.cfg["class_momentum"]
        old = self.class_memory.detach().clone()
        new = old.clone()
        new[0, classes] = lam * high1[classes] + (1 - lam) * old[0, classes]
        new[1, classes] = lam * high2[classes] + (1 - lam) * old[1, classes]
        intra = self._class_ce(rep1, classes, old[0], new[0]) + self._class_ce(rep2, classes, old[1], new[1])
        mutual = self._class_ce(rep1, classes, old[1], new[1]) + self._class_ce(rep2, classes, old[0], new[0])
        if update:
            with torch.no_grad():
                self.class_memory.copy_(new)
        return self.cfg["csc_weight"] * (intra + mutual) / classes.numel()

    # ----- pixel level ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _pixel_prototypes(self, feat: Tensor, cam: Tensor) -> Tensor:
        """Per channel, the cam-weighted mean of the top (h*w // 16) positions over the batch, L2-normalised."""
        n, c, h, w = cam.shape
        k = max(1, h * w // int(self.cfg["pixel_topk_divisor"]))  # 16 at the reference's 16 x 16; >= 1 when smaller
        values, index = torch.topk(cam.transpose(0, 1).reshape(c, -1), k=k, dim=-1)
        fea = feat.detach().permute(0, 2, 3, 1).reshape(-1, feat.shape[1])[index]
        return F.normalize((values[..., None] * fea).sum(1) / values.sum(-1, keepdim=True), dim=-1)

    def pixel_level(self, feat1: Tensor, feat2: Tensor, cam1: Tensor, cam2: Tensor, pseudo1: Tensor,
                    pseudo2: Tensor, update: bool) -> Tensor:
        proto1, proto2 = self._pixel_prototypes(feat1, cam1), self._pixel_prototypes(feat2, cam2)
        f1 = F.normalize(feat1.permute(0, 2, 3, 1).reshape(-1, feat1.shape[1]), dim=-1)
        f2 = F.normalize(feat2.permute(0, 2, 3, 1).reshape(-1, feat2.shape[1]), dim=-1)
        y1, y2 = pseudo1.reshape(-1), pseudo2.reshape(-1)
        mem = self.pixel_memory.detach()
        t, k = self.cfg["pixel_temperature"], self.num_classes
        # one matmul per view against [own prototypes, other view's prototypes, own memory]
        logits1 = f1 @ torch.cat([proto1, proto2, mem[0]]).t() / t
        logits2 = f2 @ torch.cat([proto2, proto1, mem[1]]).t() / t

        def nce(logits, block, y):
            return F.cross_entropy(logits[:, block * k:(block + 1) * k], y)

        cross_proto = (nce(logits1, 1, y1) + nce(logits2, 1, y2)) / 2
        cross_label = (nce(logits1, 0, y2) + nce(logits2, 0, y1)) / 2
        intra = (nce(logits1, 0, y1) + nce(logits2, 0, y2)) / 2
        memory = (nce(logits1, 2, y1) + nce(logits2, 2, y2)) / 2
        if update:
            lam = self.cfg["pixel_momentum"]
            with torch.no_grad():
                self.pixel_memory.copy_(lam * torch.stack([proto1, proto2]) + (1 - lam) * self.pixel_memory)
        return self.cfg["psc_weight"] * (cross_proto + cross_label + intra + memory)

    # ----- all three ------------------------------------------------------------------------------------------
    def forward(self, pixel_feat1: Tensor, roi_feat1: Tensor, pixel_feat2: Tensor, roi_feat2: Tensor,
                targets: Mapping[str, Tensor], labels: Tensor, update_memory: Optional[bool] = None
                ) -> Dict[str, Tensor]:
        """``rsc``, ``csc``, ``psc`` (weighted as in the reference). Features as the network returns them
        (``f_map_1`` = pixel, ``f_map_2`` = ROI/class projector; view 1 is resized to ``size`` here), ``targets``
        from :func:`wsss.methods.hsc_losses.contrast_targets` (``cam1``, ``cam2``, ``pseudo1``, ``pseudo2``),
        ``labels`` B x 20. Memories are updated when ``update_memory`` (default: in training mode)."""
        update = self.training if update_memory is None else bool(update_memory)
        s = self.size
        pf1, rf1 = (gather_batch(downsample_features(f, s), True) for f in (pixel_feat1, roi_feat1))
        pf2, rf2 = (gather_batch(downsample_features(f, s), True) for f in (pixel_feat2, roi_feat2))
        cam1, cam2, pl1, pl2 = (gather_batch(targets[k].detach(), False) for k in ("cam1", "cam2", "pseudo1",
                                                                                  "pseudo2"))
        labels = gather_batch(labels.to(cam1.dtype), False)
        return {"rsc": self.roi_level(rf1, rf2, pl1, pl2, update),
                "csc": self.class_level(rf1, rf2, cam1, cam2, labels, update),
                "psc": self.pixel_level(pf1, pf2, cam1, cam2, pl1, pl2, update)}

    def load_reference_memories(self, banks: Mapping[str, Tensor]) -> None:
        """Set the memories from the reference's six globals (``memobank1``, ``memobank2``, ``memobank_fb``,
        ``memobank1_fb``, ``memobank1_p``, ``memobank2_p``)."""
        with torch.no_grad():
            self.roi_memory.copy_(torch.stack([banks["memobank_fb"], banks["memobank1_fb"]]))
            self.class_memory.copy_(torch.stack([banks["memobank1"], banks["memobank2"]]))
            self.pixel_memory.copy_(torch.stack([banks["memobank1_p"], banks["memobank2_p"]]))
