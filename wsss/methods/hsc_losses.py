"""HSC's training losses besides the contrast (Wu0409/HSC_WSSS, on halbielee/EPS and YudeWang/SEAM), as plain
functions of tensors.

Reference: Wu0409/HSC_WSSS@402ee60 ``module/train.py`` (``train_hsc``, ``get_hsc_loss``), ``module/loss_helper.py``,
``module/train_helper.py``, ``network/resnet38_eps_seam_hsc.py``. Layout (EPS): CAMs are ``B x 21 x h x w`` with
channels 0..19 the classes and **channel 20 the background / saliency channel**; ``labels`` are ``B x 20``.
View 1 is the 448 crop, view 2 its 128 resize (:func:`second_view`). The three contrast levels are
:class:`wsss.methods.hsc_contrast.HierarchicalSemanticContrast`; :func:`contrast_targets` prepares their inputs.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from wsss.methods.cam_ops import minmax_normalize
from wsss.methods.eps_losses import eps_saliency_loss
from wsss.methods.rtc_losses import adaptive_min_pooling_loss, max_onehot, topk_abs_mean

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def with_background(labels: torch.Tensor) -> torch.Tensor:
    """``B x 20`` tags -> ``B x 21 x 1 x 1`` with the always-present background last (train.py:560-561)."""
    return torch.cat([labels, labels.new_ones(labels.shape[0], 1)], 1)[:, :, None, None]


def second_view(image: torch.Tensor, saliency: torch.Tensor, size: int = 128) -> Tuple[torch.Tensor, torch.Tensor]:
    """The second view: image and saliency resized bilinearly (align_corners=True) to ``size`` (train.py:536-537)."""
    resize = dict(size=(size, size), mode="bilinear", align_corners=True)
    return F.interpolate(image, **resize), F.interpolate(saliency, **resize)


# ----- EPS ------------------------------------------------------------------------------------------------------
# HSC's get_eps_loss (module/loss_helper.py) is halbielee/EPS's: the one implementation is eps_losses.eps_saliency_loss.


# ----- SEAM's PCM -----------------------------------------------------------------------------------------------
@torch.no_grad()
def pcm_seed(cam: torch.Tensor) -> torch.Tensor:
    """The CAM the PCM propagates (resnet38_eps_seam_hsc.py ``forward``, no grad): ReLU'd, divided by the
    per-channel max + 1e-5, background channel := 1 - max foreground, every foreground value below the pixel's
    foreground maximum set to 0."""
    cam = F.relu(cam.detach())
    peak = cam.flatten(2).max(-1).values[..., None, None] + 1e-5
    norm = F.relu(cam - 1e-5) / peak
    fg = norm[:, :-1]
    top = fg.max(dim=1, keepdim=True).values
    return torch.cat([torch.where(fg < top, torch.zeros_like(fg), fg), 1 - top], 1)


def pcm_features(image: torch.Tensor, conv4: torch.Tensor, conv5: torch.Tensor, f8_3: torch.Tensor,
                 f8_4: torch.Tensor) -> torch.Tensor:
    """PCM's input features: the (normalised) image bilinearly (align_corners=True) at the feature size, then
    ReLU(1x1 conv) of the detached conv4 (``f8_3`` weight) and conv5 (``f8_4``) features."""
    h, w = conv4.shape[-2:]
    x_s = F.interpolate(image, (h, w), mode="bilinear", align_corners=True)
    return torch.cat([x_s, F.relu(F.conv2d(conv4.detach(), f8_3)), F.relu(F.conv2d(conv5.detach(), f8_4))], 1)


def pcm_refine(seed: torch.Tensor, features: torch.Tensor, f9: torch.Tensor) -> torch.Tensor:
    """SEAM's pixel correlation module (``Net.PCM``): affinity ReLU(f^T f) of the L2-normalised (+1e-5) ``f9``
    projection, normalised over its first axis (+1e-5), applied to the (bilinearly resized) seed CAM."""
    n, _, h, w = features.shape
    seed = F.interpolate(seed, (h, w), mode="bilinear", align_corners=True).flatten(2)
    f = F.conv2d(features, f9).flatten(2)
    f = f / (f.norm(dim=1, keepdim=True) + 1e-5)
    aff = F.relu(f.transpose(1, 2) @ f)
    aff = aff / (aff.sum(dim=1, keepdim=True) + 1e-5)
    return (seed @ aff).view(n, -1, h, w)


# ----- classification and SEAM's equivariance ----------------------------------------------------------------
def hsc_classification_loss(cam1: torch.Tensor, cam_rv1: torch.Tensor, cam2: torch.Tensor, cam_rv2: torch.Tensor,
                            labels: torch.Tensor) -> torch.Tensor:
    """Mean over views of the multi-label soft margin of GAP(cam)[:, :20], plus the mean over views of the
    adaptive min-pooling of the labelled PCM CAMs (train.py:544, :552, :562-563, :575)."""
    lab = with_background(labels)
    cls = sum(F.multilabel_soft_margin_loss(c.mean((2, 3))[:, :-1], labels) for c in (cam1, cam2)) / 2.0
    amp = sum(adaptive_min_pooling_loss((c * lab)[:, :-1]) for c in (cam_rv1, cam_rv2)) / 2.0
    return cls + amp


def seam_er_ecr(cam1: torch.Tensor, cam2: torch.Tensor, cam_rv1: torch.Tensor, cam_rv2: torch.Tensor,
                labels: torch.Tensor, ecr_fraction: float = 0.2) -> Tuple[torch.Tensor, torch.Tensor]:
    """SEAM's equivariance (ER) and equivariant cross regularisation (ECR) between view 1 (bilinearly resized to
    view 2's size) and view 2 (loss_helper.py ``get_er_loss``). ``max_onehot`` keeps channel 0 (here a class:
    SEAM's bg-first helper on EPS's bg-last layout, a reference quirk kept)."""
    lab = with_background(labels)
    size = cam2.shape[-2:]
    down = dict(size=size, mode="bilinear", align_corners=True)
    n1 = F.interpolate(minmax_normalize(cam1), **down) * lab
    n2 = minmax_normalize(cam2) * lab
    er = (n1[:, :-1] - n2[:, :-1]).abs().mean()

    def with_bg(c):
        return torch.cat([c[:, :-1], 1 - c[:, :-1].max(dim=1, keepdim=True).values], 1).detach()

    rv1 = F.interpolate(minmax_normalize(cam_rv1), **down) * lab
    rv2 = minmax_normalize(cam_rv2) * lab
    ecr = (topk_abs_mean(max_onehot(with_bg(n2)), rv1, ecr_fraction)
           + topk_abs_mean(max_onehot(with_bg(n1)), rv2, ecr_fraction))
    return er, ecr


def hsc_baseline_losses(cam1, cam_rv1, cam2, cam_rv2, saliency1, saliency2, labels, tau: float = 0.5,
                        alpha: float = 0.5, ecr_fraction: float = 0.2) -> Dict[str, torch.Tensor]:
    """``cls``, ``sal``, ``er``, ``ecr`` of ``train_hsc`` (train.py:544-579), each with weight 1 as there.
    ``sal`` = mean over views of the EPS loss (:func:`wsss.methods.eps_losses.eps_saliency_loss`, loss_helper.py
    ``get_eps_loss``) on the CAM + mean over views of it on the PCM CAM."""
    sal = (eps_saliency_loss(cam1, saliency1, labels, tau, alpha)
           + eps_saliency_loss(cam2, saliency2, labels, tau, alpha)) / 2.0
    sal_rv = (eps_saliency_loss(cam_rv1, saliency1, labels, tau, alpha)
              + eps_saliency_loss(cam_rv2, saliency2, labels, tau, alpha)) / 2.0
    er, ecr = seam_er_ecr(cam1, cam2, cam_rv1, cam_rv2, labels, ecr_fraction)
    return {"cls": hsc_classification_loss(cam1, cam_rv1, cam2, cam_rv2, labels), "sal": sal + sal_rv,
            "er": er, "ecr": ecr}


# ----- the contrast's targets: normalised CAMs and label-CRF pseudo labels --------------------------------------
@torch.no_grad()
def contrast_cam(cam_rv: torch.Tensor, size: int, bg_threshold: float) -> torch.Tensor:
    """``get_hsc_loss``'s CAM at ``size`` (train.py:422-452): bilinear (align_corners=True), ReLU, values below
    min + 1e-5 zeroed, then ``(x - min - 1e-5) / (max - min + 1e-5)`` (the zeroed ones end negative, as there),
    background channel := ``bg_threshold``."""
    cam = F.relu(F.interpolate(cam_rv.detach(), size=(size, size), mode="bilinear", align_corners=True))
    flat = cam.flatten(2)
    hi, lo = flat.max(-1).values[..., None, None], flat.min(-1).values[..., None, None]
    cam = torch.where(cam < lo + 1e-5, torch.zeros_like(cam), cam)
    cam = (cam - lo - 1e-5) / (hi - lo + 1e-5)
    cam[:, -1] = bg_threshold
    return cam


@torch.no_grad()
def crf_image(image2: torch.Tensor, size: int) -> np.ndarray:
    """The uint8 ``B x size x size x 3`` image the label CRF reads: view 2 bilinearly (align_corners=True) at the
    CAM size, de-normalised with ImageNet statistics, cast as NumPy's ``astype(uint8)`` does (train.py:465-469)."""
    mean = torch.tensor([m * 255 for m in IMAGENET_MEAN], dtype=image2.dtype, device=image2.device)[:, None, None]
    std = torch.tensor([s * 255 for s in IMAGENET_STD], dtype=image2.dtype, device=image2.device)[:, None, None]
    img = F.interpolate(image2.detach(), size=(size, size), mode="bilinear", align_corners=True) * std + mean
    return img.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)


def label_crf_preset(cfg: Optional[dict] = None):
    """``utils/imutils.py`` ``crf_inference_label`` as a :class:`wsss.postprocess.crf.CRFPreset` (its kernels and
    iterations; :func:`label_crf` reads them): unary from the
    label map (gt_prob 0.7), Gaussian sxy 3 compat 3, bilateral sxy 50 srgb 5 compat 10, 10 iterations
    (train.py:481, :494: ``t=10, gt_prob=0.7``). ``cfg`` overrides keys."""
    from wsss.postprocess.crf import CRFPreset

    base = {"name": "hsc_train_label", "enabled": True, "unary": "labels", "gt_prob": 0.7, "label_space": "all",
            "iterations": 10, "gaussian": {"sxy": 3, "compat": 3}, "bilateral": {"sxy": 50, "srgb": 5, "compat": 10},
            "source": "Wu0409/HSC_WSSS@402ee60 utils/imutils.py:192-209, module/train.py:481, :494"}
    return CRFPreset.from_config({**base, **dict(cfg or {})})


@torch.no_grad()
def label_crf(images: np.ndarray, label_maps, preset, num_labels: int = 21):
    """The label CRF (``crf_inference_label``) of each of ``label_maps`` (B x h x w integer tensors) on
    ``images`` (uint8 B x h x w x 3). The maps of one image share its CRF: the pairwise kernels depend on the image
    only, so they are built once and only the unary changes (results identical to one CRF per map)."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels

    b, h, w = images.shape[:3]
    maps = [m.cpu().numpy().astype(np.uint8) for m in label_maps]
    out = [np.empty((b, h, w), np.int64) for _ in maps]
    for i in range(b):
        crf = dcrf.DenseCRF2D(w, h, num_labels)
        crf.addPairwiseGaussian(sxy=preset.gaussian.sxy, compat=preset.gaussian.compat)
        crf.addPairwiseBilateral(sxy=preset.bilateral.sxy, srgb=preset.bilateral.srgb,
                                 rgbim=np.ascontiguousarray(images[i]), compat=preset.bilateral.compat)
        for m, o in zip(maps, out):
            crf.setUnaryEnergy(unary_from_labels(m[i], num_labels, gt_prob=preset.gt_prob, zero_unsure=False))
            q = np.asarray(crf.inference(int(preset.iterations)), dtype=np.float32)
            o[i] = q.reshape(num_labels, h, w).argmax(0)
    return [torch.from_numpy(o).to(label_maps[0].device) for o in out]


@torch.no_grad()
def contrast_targets(cam_rv1: torch.Tensor, cam_rv2: torch.Tensor, image2: torch.Tensor, labels: torch.Tensor,
                     size: int = 16, bg_threshold: float = 0.10, crf_preset=None) -> Dict[str, torch.Tensor]:
    """What the three contrast levels read (``get_hsc_loss``, train.py:415-513): both views' normalised CAMs at
    ``size`` (= 128 // 8) and their pixel pseudo labels, argmax of ``softmax(cam * [labels, 1])`` refined by the
    label CRF on view 2's image at that size (both views use view 2's image, as there)."""
    lab = with_background(labels)
    preset = crf_preset if crf_preset is not None else label_crf_preset()
    cam1, cam2 = contrast_cam(cam_rv1, size, bg_threshold), contrast_cam(cam_rv2, size, bg_threshold)
    argmax = [F.softmax(c * lab, dim=1).argmax(1) for c in (cam1, cam2)]
    pseudo1, pseudo2 = label_crf(crf_image(image2, size), argmax, preset, cam1.shape[1])
    return {"cam1": cam1, "cam2": cam2, "pseudo1": pseudo1, "pseudo2": pseudo2}


def align_corners_weights(n_in: int, n_out: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """``n_out x n_in`` weights of 1-D linear interpolation with ``align_corners=True``, in float32 as PyTorch's
    CPU kernel computes them (``area_pixel_compute_scale``), so products with them match ``F.interpolate``."""
    scale = torch.tensor((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0, dtype=torch.float32)
    pos = torch.arange(n_out, dtype=torch.float32) * scale
    lo = pos.floor().clamp(max=n_in - 1).long()
    frac = pos - lo.float()
    m = torch.zeros(n_out, n_in, dtype=torch.float32)
    m[torch.arange(n_out), lo] += 1 - frac
    m[torch.arange(n_out), (lo + 1).clamp(max=n_in - 1)] += frac
    return m.to(dtype=dtype, device=device)


def downsample_features(feat: torch.Tensor, size: int = 16) -> torch.Tensor:
    """View 1's projector features at the contrast size: bilinear, align_corners=True (train.py:427-428), as two
    matrix products (``F.interpolate``'s weights; no zero-filled scatter in the backward of 384 channels)."""
    h, w = feat.shape[-2:]
    if (h, w) == (size, size):
        return feat
    rows = align_corners_weights(h, size, feat.dtype, feat.device)
    cols = align_corners_weights(w, size, feat.dtype, feat.device)
    return torch.matmul(torch.matmul(rows, feat), cols.t())
