"""SPML: universal weakly supervised segmentation by pixel-to-segment contrastive learning.

Ke, Hwang & Yu, ICLR 2021 (twke18/SPML). A DeepLab (ASPP, VOC) or PSPNet (DensePose) head turns
backbone features into unit pixel embeddings; each image's embeddings are grouped into segments by
spherical k-means from a grid, split by the over-segmentation and the weak labels
(:mod:`wsss.models.segsort`); four contrastive relations between pixels and segments
(:mod:`wsss.methods.spml_losses`) shape the embedding. A softmax classifier on the *detached*
normalised embeddings is trained alongside (``spml/models/predictions/segsort_softmax.py``) and is
what predicts: ``raw_scores`` are its class probabilities, background included (class 0).

Every hyper-parameter and its source: ``docs/spml.md``.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsss.checkpoints import spml as spml_release
from wsss.methods.base import WSSSModule
from wsss.methods.contract import SOFTMAX_SEG
from wsss.methods.registry import Release, register_method
from wsss.methods.spml_losses import (image_similarity_loss, nearest_labelled_tags, segsort_loss,
                                      set_segsort_loss)
from wsss.data.supervision import SEGMENT_PAD
from wsss.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from wsss.models.segsort import (build_segments, grid_labels, l2_normalize, location_features,
                                 segment_mean_directions, smoothed_colors, spherical_kmeans)

log = logging.getLogger(__name__)
IGNORE = 255

DEFAULT_LOSSES = {
    "sem_ann": {"weight": 1.0, "concentration": 6.0},
    "sem_occ": {"weight": 0.5, "concentration": 12.0},
    "img_sim": {"weight": 0.1, "concentration": 16.0, "features": "embedding_loc"},
    "feat_aff": {"weight": 0.0, "concentration": 0.0, "threshold": 0.95},
}


#: other DDP ranks' images get ids below -OTHER_RANK_OFFSET * rank index (never equal to a local or memory id)
OTHER_RANK_OFFSET = 1 << 40


class SummedASPP(nn.Module):
    """DeepLab v2 ASPP as SPML builds it: four dilated 3x3 convs (6/12/18/24) with bias, summed,
    no BN / ReLU. Keys ``aspp_{1..4}.0.{weight,bias}`` as in the official checkpoints."""

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int] = (6, 12, 18, 24)):
        super().__init__()
        self.rates = tuple(rates)
        for i, r in enumerate(self.rates):
            setattr(self, f"aspp_{i + 1}", nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, r, r)))

    def forward(self, x: Tensor) -> Tensor:
        return sum(getattr(self, f"aspp_{i + 1}")(x) for i in range(len(self.rates)))


class PyramidPooling(nn.Module):
    """PSPNet pooling (bins 1/2/3/6, 1x1 conv-BN-ReLU each) + 3x3 fusion conv-BN-ReLU; SPML's keys."""

    def __init__(self, in_channels: int, channels: int, bins: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        self.bins = tuple(bins)
        for i, b in enumerate(self.bins):
            setattr(self, f"pspp_{i + 1}", nn.Sequential(
                nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_channels, channels, 1, bias=False),
                nn.BatchNorm2d(channels), nn.ReLU(inplace=True)))
        self.conv = nn.Sequential(nn.Conv2d(in_channels + channels * len(self.bins), channels, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(getattr(self, f"pspp_{i + 1}")(x), size=size, mode="bilinear", align_corners=False)
                  for i in range(len(self.bins))]
        return self.conv(torch.cat([x] + pooled, dim=1))


def build_embedding_head(kind: str, in_channels: int, dim: int, channels: int = 512) -> nn.Module:
    if kind == "aspp":
        return SummedASPP(in_channels, dim)
    if kind == "pspp":
        return nn.Sequential(PyramidPooling(in_channels, channels), nn.Conv2d(channels, dim, 1))
    raise ValueError(f"unknown SPML embedding head '{kind}'; use aspp (VOC) or pspp (DensePose)")


def softmax_classifier(dim: int, num_classes: int, dropout: float) -> nn.Sequential:
    """SPML's prediction head: 3x3 conv D->2D (no bias), BN, ReLU, dropout, 1x1 conv 2D->classes."""
    return nn.Sequential(nn.Conv2d(dim, dim * 2, 3, 1, 1, bias=False), nn.BatchNorm2d(dim * 2), nn.ReLU(inplace=True),
                         nn.Dropout(dropout), nn.Conv2d(dim * 2, num_classes, 1))


def _pair(value, name: str) -> Tuple[int, int]:
    pair = (int(value), int(value)) if isinstance(value, (int, float)) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be a positive int or [height, width], got {value!r}")
    return pair


def cv2_nearest_index(src: int, dst: int) -> np.ndarray:
    """Source index of each destination index under ``cv2.resize(..., INTER_NEAREST)``:
    ``min(floor(x * (1 / (dst / src))), src - 1)`` in double precision, as OpenCV's ``resizeNN``."""
    return np.minimum(np.floor(np.arange(dst) * (1.0 / (dst / src))).astype(np.int64), src - 1)


def cv2_resize_longer_side(x: Tensor, longer: int) -> Tensor:
    """``spml/data/transforms.py: resize_with_interpolation``: ``N x 3 x h x w`` normalised images to
    ``(int(r*h), int(r*w))``, ``r = min(longer/h, longer/w)``, with ``cv2.resize(INTER_LINEAR)`` on the float image."""
    import cv2

    h, w = x.shape[-2:]
    ratio = min(float(longer) / h, float(longer) / w)
    nh, nw = int(ratio * h), int(ratio * w)
    if (nh, nw) == (h, w):
        return x
    arr = x.detach().float().cpu().numpy()
    out = np.stack([cv2.resize(np.ascontiguousarray(a.transpose(1, 2, 0)), (nw, nh), interpolation=cv2.INTER_LINEAR)
                    .transpose(2, 0, 1) for a in arr])
    return torch.from_numpy(np.ascontiguousarray(out)).to(device=x.device, dtype=x.dtype)


@register_method
class SPMLModule(WSSSModule):
    """SPML on any registered backbone. See ``conf/method/spml.yaml`` for the arguments."""

    method_name = "spml"
    outputs = (SOFTMAX_SEG,)  # the softmax head's probabilities, or retrieval vote fractions
    seed_output = "seg"
    release = Release(load=spml_release.load_official_into, detect=spml_release.is_official,
                      experiment=spml_release.official_experiment, title="an SPML release",
                      locate=spml_release.find_checkpoint_file)
    recipes = ("spml_voc_tag", "spml_voc_box", "spml_voc_scribble", "spml_voc_point", "spml_densepose_point",
               "spml_voc_tag_stage2", "spml_voc_box_stage2")
    #: ``retrieval_memory=FILE`` (wsss.infer): segment retrieval against a ``wsss.spml_memory`` file
    tools = {"retrieval_memory": "set_retrieval_memory"}

    def __init__(self, backbone: Mapping, num_classes: int, class_names: Sequence[str] | None = None,
                 bg: Mapping | None = None, optim: Mapping | None = None, scheduler: Mapping | None = None,
                 eval_with_labels: bool = False, log_images: int = 4,
                 head: str = "aspp", embedding_dim: int = 64, head_channels: int = 512, upsample: int = 2,
                 dropout: float = 0.75, kmeans: Mapping | None = None, local_features: str = "location",
                 loc_embedding_scale: Optional[float] = None, losses: Mapping | None = None,
                 memory_bank_size: int = 2, trainable_backbone: Optional[Sequence[str]] = None,
                 weights: Optional[str] = None,
                 inference: Mapping | None = None, test_crop_size: Union[int, Sequence[int]] = 512,
                 test_stride: Union[int, Sequence[int]] = 512, test_image_size: int = 0,
                 sync_prototypes: bool = True, val_multiscale: bool = False, track_train_seeds: int = 0,
                 retrieval_memory: Optional[str] = None, retrieval_num_clusters: Sequence[int] = (12, 12),
                 retrieval_top_k: int = 20, stage: int = 1):
        super().__init__(backbone=backbone, num_classes=num_classes, class_names=class_names,
                         bg=bg or {"rule": "learned"}, optim=optim, scheduler=scheduler,
                         eval_with_labels=eval_with_labels, log_images=log_images, inference=inference,
                         val_multiscale=val_multiscale, track_train_seeds=track_train_seeds)
        self.save_hyperparameters(ignore=["weights"])
        self.head = build_embedding_head(head, self.backbone.out_channels, embedding_dim, head_channels)
        self.classifier = softmax_classifier(embedding_dim, num_classes, dropout)
        self.upsample = upsample
        km = dict(kmeans or {})
        self.num_clusters = list(km.get("num_clusters", [6, 6]))
        self.kmeans_iterations = int(km.get("iterations", 10))
        if local_features not in ("location", "location_color"):
            raise ValueError("local_features must be 'location' (VOC) or 'location_color' (DensePose)")
        self.local_features = local_features
        self.loc_embedding_scale = loc_embedding_scale
        self.loss_cfg = {k: dict(v) for k, v in DEFAULT_LOSSES.items()}
        for k, v in (losses or {}).items():
            if k not in self.loss_cfg:
                raise ValueError(f"unknown SPML loss '{k}'; known: {sorted(self.loss_cfg)}")
            self.loss_cfg[k].update(dict(v))
        self.memory_bank_size = int(memory_bank_size)
        self.trainable_backbone = list(trainable_backbone) if trainable_backbone else None
        self.test_crop_size = _pair(test_crop_size, "test_crop_size")
        self.test_stride = _pair(test_stride, "test_stride")
        self.test_image_size = int(test_image_size)
        self._memory: List[Dict[str, Tensor]] = []
        self.sync_prototypes = bool(sync_prototypes)
        self._batch_offset = 0
        self.retrieval_num_clusters = [int(v) for v in retrieval_num_clusters]
        self.retrieval_top_k = int(retrieval_top_k)
        self.retrieval_memory: Optional[str] = None
        self._retrieval_bank: Optional[Tuple[Tensor, Tensor]] = None
        if retrieval_memory:
            self.set_retrieval_memory(retrieval_memory)
        if self.trainable_backbone is not None:
            names = [n for n, _ in self.backbone.named_parameters()]
            unknown = [t for t in self.trainable_backbone if not any(n == t or n.startswith(t + ".") for n in names)]
            if unknown:
                tops = sorted({n.split(".")[0] for n in names})
                raise ValueError(f"method.trainable_backbone names {unknown}, which backbone "
                                 f"'{backbone.get('name')}' does not have (its blocks: {tops}); "
                                 "set method.trainable_backbone=null to train the whole backbone")
            for name, p in self.backbone.named_parameters():
                if not any(name == t or name.startswith(t + ".") for t in self.trainable_backbone):
                    p.requires_grad_(False)
        if int(stage) not in (1, 2):
            raise ValueError(f"method.stage must be 1 (embedding + head, train.py) or 2 (the classifier alone on "
                             f"pseudo labels, train_classifier.py), got {stage}")
        self.stage = int(stage)
        if self.stage == 2:  # train_classifier.py: the embedding network is fixed (no_grad, eval mode)
            for p in list(self.backbone.parameters()) + list(self.head.parameters()):
                p.requires_grad_(False)
        if weights:
            if self.stage == 2:
                self.load_stage1_embedding(weights)
            else:
                self.load_official(weights)

    def load_stage1_embedding(self, path: str) -> None:
        """Stage 2 starts from stage 1's embedding network only, its classifier new (``train_classifier.py:97-103``
        loads ``['embedding_model']`` of ``config.network.pretrained``). ``path``: a wsss stage-1 checkpoint or an
        authors' ``model-*.pth`` (or its folder)."""
        from pathlib import Path

        from wsss.inference.loading import read_wsss_checkpoint_info

        file = Path(str(path)).expanduser()
        if not file.exists():
            raise FileNotFoundError(f"method.weights={file}: no such stage-1 checkpoint (a wsss SPML checkpoint, e.g. "
                                    "outputs/.../checkpoints/last.ckpt, or the authors' stage1/model-*.pth)")
        info = read_wsss_checkpoint_info(file)
        if info is not None:
            if info.get("method") != "spml":
                raise ValueError(f"method.weights={file} is a checkpoint of method '{info.get('method')}', not an "
                                 "SPML stage-1 model")
            state = torch.load(file, map_location="cpu", weights_only=False)["state_dict"]
        else:
            state, file = spml_release.read_official(file)
        for prefix in ("backbone", "head"):
            sub = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
            try:
                getattr(self, prefix).load_state_dict(sub, strict=True)
            except RuntimeError as exc:
                raise ValueError(f"method.weights={file}: its {prefix} does not fit this model ({exc}); stage 2 "
                                 "needs the backbone, head and embedding_dim of stage 1") from exc
        log.info("stage 2: embedding network from %s, classifier initialised anew", file)

    def train(self, mode: bool = True):
        """Stage 2 keeps the embedding network in eval mode (fixed BN statistics), as ``train_classifier.py:115``."""
        super().train(mode)
        if self.stage == 2:
            self.backbone.eval()
            self.head.eval()
        return self

    # ----- network ------------------------------------------------------------------------------
    def embed(self, image: Tensor, size: Optional[Sequence[int]] = None) -> Tensor:
        """Raw pixel embeddings: head(final feature), x``upsample`` bilinear (or to ``size``)."""
        feats = self.backbone(image)
        emb = self.head(feats[self.backbone.final_key])
        if self.upsample and self.upsample != 1:
            emb = F.interpolate(emb, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        if size is not None:
            emb = F.interpolate(emb, size=tuple(size), mode="bilinear", align_corners=False)
        return emb

    def logits(self, embedding: Tensor) -> Tensor:
        return self.classifier(l2_normalize(embedding, dim=1))

    def raw_scores(self, image: Tensor, output: Optional[str] = None) -> Tensor:
        """Class probabilities (background first) at the input size, as the reference predicts:
        embeddings resized to the input, normalised, then classified."""
        return F.softmax(self.logits(self.embed(image, size=image.shape[-2:])), dim=1)

    def random_walk_scores(self, image: Tensor, tags: np.ndarray, settings=None) -> np.ndarray:
        """``pseudo_softmaxrw_crf.py``'s walked class maps of one normalised image (``wsss.pseudo_label
        refine=random_walk``; :mod:`wsss.methods.spml_random_walk`)."""
        from wsss.methods.spml_random_walk import RandomWalkSettings, random_walk_scores

        return random_walk_scores(self, image, tags, settings or RandomWalkSettings())

    # ----- the reference's test-time flow (pyscripts/inference/inference_softmax{,_msc}.py) -----------------
    def sliding_window_average(self, image: Tensor, per_window, channels_last: bool = False) -> Tensor:
        """``per_window(x)`` over the reference's test windows, averaged where they overlap: the image is
        zero-padded bottom/right to ``test_crop_size`` and windows of that size end at
        ``linspace(crop, padded, ceil((padded-crop)/stride)+1)`` (int32). Returns ``N x K x ph x pw``."""
        n, _, h, w = image.shape
        (ch, cw), (sh, sw) = self.test_crop_size, self.test_stride
        ph, pw = max(h, ch), max(w, cw)
        if (ph, pw) != (h, w):
            image = F.pad(image, (0, pw - w, 0, ph - h))
        ends_h = np.linspace(ch, ph, math.ceil(1.0 * (ph - ch) / sh) + 1, dtype=np.int32)
        ends_w = np.linspace(cw, pw, math.ceil(1.0 * (pw - cw) / sw) + 1, dtype=np.int32)
        total = counts = None
        for eh in ends_h:
            for ew in ends_w:
                eh, ew = int(eh), int(ew)
                x = image[:, :, eh - ch:eh, ew - cw:ew]
                x = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
                out = per_window(x)
                if total is None:
                    total = out.new_zeros((n, out.shape[1], ph, pw))
                    counts = out.new_zeros((1, 1, ph, pw))
                total[:, :, eh - ch:eh, ew - cw:ew] += out
                counts[:, :, eh - ch:eh, ew - cw:ew] += 1
        return total / counts

    def window_logits(self, image: Tensor, channels_last: bool = False) -> Tensor:
        """Logits of ``N x 3 x h x w`` images as the reference computes them: each window's embeddings resized
        to the window and classified, averaged over windows (:meth:`sliding_window_average`), cropped to h x w."""
        h, w = image.shape[-2:]
        logits = self.sliding_window_average(
            image, lambda x: self.logits(self.embed(x, size=x.shape[-2:])).float(), channels_last)
        return logits[:, :, :h, :w]

    @torch.no_grad()
    def multiscale_raw_scores(self, inputs: Sequence[Tensor], size: Sequence[int], flip: bool = True,
                              aggregation: Optional[str] = None, channels_last: bool = False,
                              output: Optional[str] = None) -> Tensor:
        """Summed class probabilities at the original ``size``, as SPML's inference scripts compute them.

        ``test_image_size == 0`` (``inference_softmax_msc.py``): per pyramid image (and its mirror, padded on the
        right after flipping as the reference does) :meth:`window_logits`, bilinear (``align_corners=False``) to
        ``size``, softmax, un-flip, summed in the reference's order (flipped first).
        ``test_image_size > 0`` (``inference_softmax.py``; one scale only): the image's longer side is first
        resized to ``test_image_size`` (cv2 bilinear), and the probabilities at that resolution are mapped back with
        cv2's nearest-neighbour rule, so their argmax is the reference's nearest-resized argmax.
        ``aggregation="mean"`` divides by the number of maps (the CRF scripts' ``np.mean``)."""
        self.output_spec(output)
        aggregation = aggregation or self.score_aggregation
        if aggregation not in ("sum", "mean"):
            raise ValueError(f"aggregation must be sum or mean, not {aggregation!r}")
        if self.retrieval_memory is not None:
            return self.retrieval_votes(inputs, size, flip, channels_last)
        if self.test_image_size > 0 and len(inputs) != 1:
            raise ValueError(f"test_image_size={self.test_image_size} reproduces inference_softmax.py, which has "
                             f"one scale; use scales=[1.0] (got {len(inputs)} scales) or test_image_size=0")
        size = (int(size[0]), int(size[1]))
        total, count = None, 0
        for x in inputs:
            if self.test_image_size > 0:
                x = cv2_resize_longer_side(x, self.test_image_size)
            b = x.shape[0]
            logits = self.window_logits(torch.cat([x.flip(-1), x]) if flip else x, channels_last)
            if self.test_image_size > 0:
                probs = F.softmax(logits, dim=1)
                iy = torch.from_numpy(cv2_nearest_index(probs.shape[-2], size[0])).to(probs.device)
                ix = torch.from_numpy(cv2_nearest_index(probs.shape[-1], size[1])).to(probs.device)
                probs = probs.index_select(2, iy).index_select(3, ix)
            else:
                probs = F.softmax(F.interpolate(logits, size=size, mode="bilinear", align_corners=False), dim=1)
            parts = [probs[:b].flip(-1), probs[b:]] if flip else [probs]
            for part in parts:
                total = part if total is None else total + part
                count += 1
        return total / count if aggregation == "mean" else total


    # ----- training -----------------------------------------------------------------------------
    def _local(self, image: Tensor, size) -> Tensor:
        b = image.shape[0]
        loc = location_features(size, image.device, image.dtype).expand(b, *size, 2)
        if self.local_features == "location_color":
            loc = torch.cat([loc, smoothed_colors(image, size)], dim=-1)
        return loc

    def _check_batch(self, batch: dict) -> None:
        missing = [k for k in ("weak", "segments") if k not in batch]
        if missing:
            raise KeyError(
                f"SPML needs per-pixel weak labels and an over-segmentation, but the batch has no {missing}. "
                "Use supervision=scribble|point|box|tag with its loader; tag/box need CAMs "
                "(supervision.loader.label_dir / cam_dir) and every type needs over-segmentation PNGs "
                "(supervision.loader.segments_dir, VOC: hed/)")

    def training_losses(self, batch: dict) -> Dict[str, Tensor]:
        if self.stage == 2:
            return self.classifier_losses(batch)
        self._check_batch(batch)
        image = batch["image"]
        return self.losses_from_embedding(self.embed(image), image, batch["weak"].long(), batch["segments"].long(),
                                          batch["cls"].float())

    def classifier_losses(self, batch: dict) -> Dict[str, Tensor]:
        """Stage 2 (``train_classifier.py:139-152``, ``softmax_classifier.py:52-77``): the fixed embedding (x2, not
        resized to the input), the classifier's logits bilinear to the label size, CE on the pseudo labels (labels
        >= num_classes ignored)."""
        if "mask" not in batch:
            raise KeyError("method.stage=2 trains the classifier on pseudo labels: the batch has no 'mask'; set "
                           "dataset.pseudo_label_dir=DIR (e.g. python -m wsss.pseudo_label ... refine=random_walk)")
        self.backbone.eval()  # fixed BN statistics whatever mode the trainer set (train_classifier.py:115)
        self.head.eval()
        with torch.no_grad():
            emb = self.embed(batch["image"])
        target = batch["mask"].long()
        logits = F.interpolate(self.logits(emb), size=target.shape[-2:], mode="bilinear", align_corners=False)
        target = torch.where(target >= self.num_classes, torch.full_like(target, IGNORE), target)
        if not (target != IGNORE).any():
            return {"ce": logits.sum() * 0.0}
        return {"ce": F.cross_entropy(logits.float(), target, ignore_index=IGNORE)}

    def losses_from_embedding(self, emb: Tensor, image: Tensor, weak: Tensor, regions: Tensor,
                              cls: Tensor) -> Dict[str, Tensor]:
        """Everything after the network: segments, the contrastive relations, the classifier's CE."""
        c = self.num_classes
        size = emb.shape[-2:]
        lab = F.interpolate(weak[:, None].float(), size=size, mode="nearest")[:, 0].long()
        reg = F.interpolate(regions[:, None].float(), size=size, mode="nearest")[:, 0].long()
        valid = reg != SEGMENT_PAD
        sem = torch.where((lab >= c), torch.full_like(lab, c), lab)  # unlabelled -> c, still clustered
        reg = torch.where(valid, reg, torch.zeros_like(reg))
        with torch.autocast(device_type=image.device.type, enabled=False):
            emb32 = emb.float()
            segs = build_segments(emb32, sem, reg, valid, self.num_clusters, self.kmeans_iterations,
                                  local=self._local(image.float(), size), loc_embedding_scale=self.loc_embedding_scale)
            others = self.other_rank_segments(segs, cls)
            losses = self._contrastive_losses(segs, cls, others)
        # softmax classifier on detached embeddings, full-resolution CE (unlabelled / padding ignored)
        logits = F.interpolate(self.logits(emb.detach()), size=weak.shape[-2:], mode="bilinear", align_corners=False)
        target = torch.where(weak >= c, torch.full_like(weak, IGNORE), weak)
        ce = F.cross_entropy(logits.float(), target, ignore_index=IGNORE) if (target != IGNORE).any() \
            else logits.sum() * 0.0
        w_ann = self.loss_cfg["sem_ann"]["weight"]
        out = {"sem_ann": (ce + losses.pop("sem_ann")) * w_ann}
        for name, value in losses.items():
            out[name] = value * self.loss_cfg[name]["weight"]
        self._push_memory(segs, cls, image.shape[0], others)
        return out

    def _contrastive_losses(self, segs, cls: Tensor, others: Optional[Dict[str, Tensor]] = None) -> Dict[str, Tensor]:
        """The four relations of this rank's pixels against its own segments, ``others`` (the other DDP
        ranks' segments, see :meth:`other_rank_segments`) and the memory bank."""
        c = self.num_classes
        cfg = self.loss_cfg
        tags = torch.cat([torch.zeros_like(cls[:, :1]), cls], dim=1)[:, 1:c]  # foreground tags (reference: [1:C])
        protos, proto_labels = segs.prototype, segs.segment_label
        proto_tags, proto_batch, proto_loc = tags[segs.segment_batch], segs.segment_batch, segs.prototype_loc
        # local segments first: pixel_segment indexes them directly in the pooled list
        banks = ([others] if others is not None else []) + self._memory
        if banks:
            protos = torch.cat([protos] + [m["prototype"] for m in banks])
            proto_labels = torch.cat([proto_labels] + [m["label"] for m in banks])
            proto_tags = torch.cat([proto_tags] + [m["tags"] for m in banks])
            proto_batch = torch.cat([proto_batch] + [m["batch"] for m in banks])
            proto_loc = torch.cat([proto_loc] + [m["prototype_loc"] for m in banks])
        out: Dict[str, Tensor] = {}
        # semantic annotation: labelled pixels vs labelled segments
        pix_lab = segs.pixel_label < c
        seg_lab = proto_labels < c
        rank = torch.cumsum(seg_lab.long(), 0) - 1
        # one pixel-prototype cosine matrix serves both relations (they differ in subsets and concentration)
        cosine = torch.mm(segs.embedding, protos.t()) if cfg["sem_occ"]["weight"] else None
        out["sem_ann"] = segsort_loss(segs.embedding[pix_lab], rank[segs.pixel_segment[pix_lab]],
                                      segs.pixel_label[pix_lab], protos[seg_lab], proto_labels[seg_lab],
                                      cfg["sem_ann"]["concentration"],
                                      cosine=None if cosine is None else cosine[pix_lab][:, seg_lab])
        if cfg["sem_occ"]["weight"]:
            out["sem_occ"] = set_segsort_loss(segs.embedding, segs.pixel_segment, tags[segs.pixel_batch], protos,
                                              proto_tags, cfg["sem_occ"]["concentration"], cosine=cosine)
        if cfg["img_sim"]["weight"]:
            with_loc = cfg["img_sim"].get("features", "embedding_loc") == "embedding_loc"
            x = segs.embedding_loc if with_loc else segs.embedding
            p = segs.prototype_loc if with_loc else segs.prototype
            out["img_sim"] = image_similarity_loss(x, segs.pixel_segment, segs.pixel_batch, p, segs.segment_batch,
                                                   segs.segment_region, cfg["img_sim"]["concentration"])
        if cfg["feat_aff"]["weight"]:
            aff_tags = nearest_labelled_tags(proto_loc, proto_labels, proto_batch, c,
                                             cfg["feat_aff"].get("threshold", 0.95))
            out["feat_aff"] = set_segsort_loss(segs.embedding, segs.pixel_segment, aff_tags[segs.pixel_segment],
                                               protos, aff_tags, cfg["feat_aff"]["concentration"])
        return out

    def other_rank_segments(self, segs, cls: Tensor) -> Optional[Dict[str, Tensor]]:
        """Under DDP, the segments of every other rank, as the reference's multi-GPU step pools all GPUs'
        prototypes before the loss (``train.py``: ``gather_clustering_and_update_prototypes``).

        Prototypes are gathered differentiably (``torch.distributed.nn.all_gather``: gradients reach the
        rank that made them), so DDP's gradient average equals the reference's mean of per-GPU losses.
        Other ranks' image indices are moved to disjoint negative ids. None in a single process.
        """
        import torch.distributed as dist

        if not (self.sync_prototypes and dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        from torch.distributed.nn.functional import all_gather as gather_with_grad

        world, me = dist.get_world_size(), dist.get_rank()
        c = self.num_classes
        tags = torch.cat([torch.zeros_like(cls[:, :1]), cls], dim=1)[:, 1:c][segs.segment_batch]
        count = torch.tensor([segs.prototype.shape[0]], device=segs.prototype.device)
        counts = [torch.zeros_like(count) for _ in range(world)]
        dist.all_gather(counts, count)
        top = max(int(n) for n in counts)

        def padded(t: Tensor) -> Tensor:
            out = t.new_zeros((top,) + tuple(t.shape[1:]))
            out[: t.shape[0]] = t
            return out

        def gather_plain(t: Tensor) -> List[Tensor]:
            parts = [torch.zeros_like(padded(t)) for _ in range(world)]
            dist.all_gather(parts, padded(t).contiguous())
            return parts

        gathered = {"prototype": list(gather_with_grad(padded(segs.prototype).contiguous())),
                    "prototype_loc": gather_plain(segs.prototype_loc.detach()),
                    "label": gather_plain(segs.segment_label), "tags": gather_plain(tags),
                    "batch": gather_plain(segs.segment_batch)}
        ranks = [r for r in range(world) if r != me]
        out = {k: torch.cat([v[r][: int(counts[r])] for r in ranks]) for k, v in gathered.items()}
        offsets = torch.cat([torch.full((int(counts[r]),), -(i + 1) * OTHER_RANK_OFFSET, dtype=torch.long,
                                        device=count.device) for i, r in enumerate(ranks)])
        out["batch"] = out["batch"] + offsets
        return out

    @torch.no_grad()
    def _push_memory(self, segs, cls: Tensor, batch_size: int, others: Optional[Dict[str, Tensor]] = None) -> None:
        """Keep the last ``memory_bank_size`` batches' prototypes (detached) as extra negatives/positives."""
        if self.memory_bank_size <= 0:
            return
        c = self.num_classes
        tags = torch.cat([torch.zeros_like(cls[:, :1]), cls], dim=1)[:, 1:c]
        for m in self._memory:
            m["batch"] = m["batch"] + batch_size  # keep memory images distinct from the current batch
        entry = {"prototype": segs.prototype.detach(), "label": segs.segment_label,
                 "tags": tags[segs.segment_batch], "batch": segs.segment_batch + batch_size,
                 "prototype_loc": segs.prototype_loc.detach()}
        if others is not None:  # the reference's bank holds every GPU's prototypes
            entry = {k: torch.cat([v, others[k].detach() + (batch_size if k == "batch" else 0)])
                     for k, v in entry.items()}
        self._memory.append(entry)
        self._memory = self._memory[-self.memory_bank_size:]

    # ----- reference inference ------------------------------------------------------------------
    @torch.no_grad()
    def predict_reference(self, image: np.ndarray, image_size: int = 512, crop_size: int = 512,
                          mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
        """``inference_softmax.py``: longer side to ``image_size`` (cv2 bilinear on the normalised image),
        zero padding bottom/right to ``crop_size``, one forward, argmax, crop, nearest resize back.

        ``image``: HxWx3 uint8 RGB. Returns HxW uint8 labels.
        """
        import cv2

        h, w = image.shape[:2]
        x = (image.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        if image_size > 0:
            ratio = min(float(image_size) / h, float(image_size) / w)
            x = cv2.resize(x, (int(ratio * w), int(ratio * h)), interpolation=cv2.INTER_LINEAR)
        rh, rw = x.shape[:2]
        ph, pw = max(rh, crop_size), max(rw, crop_size)
        pad = np.zeros((ph, pw, 3), np.float32)
        pad[:rh, :rw] = x
        t = torch.from_numpy(pad.transpose(2, 0, 1)).unsqueeze(0).to(self.device)
        logits = self.logits(self.embed(t, size=t.shape[-2:]))
        pred = logits.argmax(1)[0, :rh, :rw].cpu().numpy().astype(np.uint8)
        return cv2.resize(pred, (w, h), interpolation=cv2.INTER_NEAREST)

    # ----- segment retrieval (pyscripts/inference/prototype.py + inference.py) ----------------------
    def window_embeddings(self, image: Tensor, channels_last: bool = False) -> Tensor:
        """``N x D x ph x pw`` embeddings of the image zero-padded bottom/right to ``test_crop_size``, as
        ``prototype.py`` / ``inference.py`` compute them: per window the embeddings resized to the window and
        unit-normalised, averaged where windows overlap (:meth:`sliding_window_average`)."""
        return self.sliding_window_average(
            image, lambda x: l2_normalize(self.embed(x, size=x.shape[-2:]).float(), dim=1), channels_last)

    def retrieval_segments(self, image: Tensor, channels_last: bool = False) -> List[Tuple[Tensor, Tensor]]:
        """Segments of ``N x 3 x h x w`` (already resized) images as the retrieval scripts make them: the padded
        :meth:`window_embeddings`, vMF k-means on ``normalize([normalize(emb), loc])`` from a
        ``retrieval_num_clusters`` grid over the *padded* size (location features too), padding pixels excluded
        (``generate_clusters`` with the scripts' fake labels, 255 on the padding), clusters renumbered in order.

        Returns per image ``(prototypes M x D, segment index of each pixel, h x w)``: prototypes are the unit mean
        direction of the unit embeddings (``calculate_prototypes_from_labels``)."""
        n, _, h, w = image.shape
        emb = self.window_embeddings(image, channels_last)
        d, ph, pw = emb.shape[1:]
        flat = l2_normalize(emb.permute(0, 2, 3, 1).reshape(n, ph * pw, d))
        loc = location_features((ph, pw), flat.device, flat.dtype).reshape(1, ph * pw, 2).expand(n, -1, -1)
        flat_loc = l2_normalize(torch.cat([flat, loc], dim=-1))
        init = grid_labels(self.retrieval_num_clusters, (ph, pw), flat.device).view(-1)
        valid = torch.zeros(ph, pw, dtype=torch.bool, device=flat.device)
        valid[:h, :w] = True
        valid = valid.view(1, -1).expand(n, -1)
        if self.kmeans_iterations > 0:
            clusters = spherical_kmeans(flat_loc, init, int(init.max()) + 1, valid, self.kmeans_iterations)
        else:
            clusters = init.expand(n, -1)
        out = []
        for i in range(n):
            keep = clusters[i].view(ph, pw)[:h, :w].reshape(-1)
            _, index = torch.unique(keep, return_inverse=True)
            pixels = flat[i].view(ph, pw, d)[:h, :w].reshape(-1, d)
            out.append((segment_mean_directions(pixels, index, int(index.max()) + 1), index.view(h, w)))
        return out

    @torch.no_grad()
    def memory_entries(self, image: Tensor, label: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``prototype.py`` for one ``1 x 3 x H x W`` normalised image and its ``H x W`` label map: the image's
        longer side to ``test_image_size`` (cv2 bilinear; labels cv2 nearest) when > 0, segments
        (:meth:`retrieval_segments`), and each segment's majority label (ties: the lowest label; 255 counts as a
        label and is dropped when the memory is loaded, as ``inference.py`` does). Returns float32 ``M x D``
        prototypes and int64 ``M`` labels."""
        import cv2

        if self.test_image_size > 0:
            image = cv2_resize_longer_side(image, self.test_image_size)
            rh, rw = image.shape[-2:]
            label = cv2.resize(np.ascontiguousarray(label), (rw, rh), interpolation=cv2.INTER_NEAREST)
        if tuple(label.shape) != tuple(image.shape[-2:]):
            raise ValueError(f"label map {tuple(label.shape)} does not match the image {tuple(image.shape[-2:])}")
        protos, index = self.retrieval_segments(image)[0]
        seg = index.reshape(-1).cpu().numpy()
        lab = np.asarray(label, np.int64).reshape(-1)
        num_labels = int(lab.max()) + 1
        votes = np.bincount(seg * num_labels + lab, minlength=protos.shape[0] * num_labels)
        majority = votes.reshape(protos.shape[0], num_labels).argmax(1)
        return protos.float().cpu().numpy(), majority.astype(np.int64)

    def set_retrieval_memory(self, path: Optional[str]) -> None:
        """Predict by segment retrieval against the memory file ``path`` (``python -m wsss.spml_memory``);
        None: back to the softmax head."""
        self.retrieval_memory = None if path is None else str(path)
        self._retrieval_bank = None
        if path is None:
            return
        from pathlib import Path

        file = Path(str(path)).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"retrieval memory not found: {file}; write it with python -m wsss.spml_memory "
                                    "ckpt=... dataset.root=... split=train_aug out=MEMORY.npz")
        with np.load(file) as data:
            if "prototypes" not in data or "labels" not in data:
                raise ValueError(f"{file}: not an SPML memory (needs 'prototypes' and 'labels'; python -m wsss.spml_memory)")
            protos, labels = data["prototypes"].astype(np.float32), data["labels"].astype(np.int64)
            settings = {k: data[k].tolist() for k in ("num_clusters", "iterations", "test_image_size",
                                                      "test_crop_size", "test_stride") if k in data}
        self._adopt_memory_settings(file, settings)
        keep = labels != IGNORE  # inference.py: prototypes of the ignore class are removed
        protos, labels = protos[keep], labels[keep]
        if protos.ndim != 2 or protos.shape[1] != self.hparams.embedding_dim:
            raise ValueError(f"{file}: prototypes of shape {protos.shape}; this model embeds in "
                             f"{self.hparams.embedding_dim} dimensions")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"{file}: labels outside 0..{self.num_classes - 1} (and 255)")
        if labels.size < self.retrieval_top_k:
            raise ValueError(f"{file}: {labels.size} prototypes with a label; retrieval_top_k={self.retrieval_top_k} "
                             "needs at least that many")
        self._retrieval_bank = (torch.from_numpy(protos), torch.from_numpy(labels))

    def _adopt_memory_settings(self, file, settings: Mapping) -> None:
        """The test segments are made as the memory's were (the reference's prototype.py and inference.py read one
        config): grid, k-means iterations, image size, crop and stride recorded in the memory file win."""
        current = {"num_clusters": list(self.retrieval_num_clusters), "iterations": self.kmeans_iterations,
                   "test_image_size": self.test_image_size, "test_crop_size": list(self.test_crop_size),
                   "test_stride": list(self.test_stride)}
        changed = {k: v for k, v in settings.items() if current[k] != v}
        if changed:
            log.info("%s: using the memory's settings %s (model had %s)", file, changed,
                     {k: current[k] for k in changed})
        if "num_clusters" in settings:
            self.retrieval_num_clusters = [int(v) for v in settings["num_clusters"]]
        if "iterations" in settings:
            self.kmeans_iterations = int(settings["iterations"])
        if "test_image_size" in settings:
            self.test_image_size = int(settings["test_image_size"])
        if "test_crop_size" in settings:
            self.test_crop_size = _pair(settings["test_crop_size"], "test_crop_size")
        if "test_stride" in settings:
            self.test_stride = _pair(settings["test_stride"], "test_stride")

    def retrieve_labels(self, prototypes: Tensor) -> Tensor:
        """``segsort.py: predictions``: each segment prototype's ``retrieval_top_k`` most similar memory
        prototypes (``argsort`` of the dot products, descending; rows in the reference's <= 10 groups), their labels,
        and the majority vote per segment (ties: the lowest label). Returns ``M x num_classes`` vote counts."""
        bank, bank_labels = self._retrieval_bank
        bank, bank_labels = bank.to(prototypes.device), bank_labels.to(prototypes.device)
        n = prototypes.shape[0]
        groups = max(1, min(10, n - 1))
        step = n // groups
        bounds = [i * step for i in range(groups)] + [n]
        votes = prototypes.new_zeros((n, self.num_classes))
        for st, ed in zip(bounds[:-1], bounds[1:]):
            sim = torch.mm(prototypes[st:ed].float(), bank.t())
            top = torch.argsort(sim, 1, descending=True)[:, :self.retrieval_top_k]
            labels = bank_labels[top]
            votes[st:ed].scatter_add_(1, labels, torch.ones_like(labels, dtype=votes.dtype))
        return votes

    @torch.no_grad()
    def retrieval_votes(self, inputs: Sequence[Tensor], size: Sequence[int], flip: bool = False,
                        channels_last: bool = False) -> Tensor:
        """``inference.py``: ``B x num_classes x H x W`` vote fractions (of ``retrieval_top_k``) of each pixel's
        segment; their argmax (ties: lowest class) is the script's label map. One scale, no flip: the longer side
        to ``test_image_size`` (when > 0), segments, retrieval, cv2 nearest back to ``size``."""
        if len(inputs) != 1 or flip:
            raise ValueError("segment retrieval (method.retrieval_memory) reproduces inference.py, which has one scale "
                             "and no flip: use scales=[1.0] flip=false")
        if self._retrieval_bank is None:
            self.set_retrieval_memory(self.retrieval_memory)
        x = inputs[0]
        if self.test_image_size > 0:
            x = cv2_resize_longer_side(x, self.test_image_size)
        size = (int(size[0]), int(size[1]))
        iy = torch.from_numpy(cv2_nearest_index(x.shape[-2], size[0])).to(x.device)
        ix = torch.from_numpy(cv2_nearest_index(x.shape[-1], size[1])).to(x.device)
        out = []
        for protos, index in self.retrieval_segments(x.float(), channels_last):
            votes = self.retrieve_labels(protos) / float(self.retrieval_top_k)
            maps = votes[index.reshape(-1)].view(index.shape[0], index.shape[1], -1).permute(2, 0, 1)
            out.append(maps.index_select(1, iy).index_select(2, ix))
        return torch.stack(out)
