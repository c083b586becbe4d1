"""EPS's saliency loss (Lee et al., CVPR 2021) as a plain function, shared by EPS and HSC.

Reference: halbielee/EPS@0c2cdd0 ``eps.py:5-63`` ``get_eps_loss``; HSC calls the same function
(Wu0409/HSC_WSSS@402ee60 ``module/loss_helper.py`` ``get_eps_loss``) with tau 0.5. The CAM has the EPS layout:
channels ``0..C-1`` the foreground classes, channel ``C`` (the last) background / saliency.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F


def eps_saliency_parts(cam: torch.Tensor, saliency: torch.Tensor, label: torch.Tensor, tau: float,
                       lam: float) -> Dict[str, torch.Tensor]:
    """The EPS loss and its intermediates (``loss``, ``fg``, ``bg``, ``sal_pred``, ``valid``).

    ``cam``: ``B x (C+1) x h x w`` logits, background last; ``saliency``: ``B x H x W`` or ``B x 1 x H x W`` in
    0..1, resized to ``h x w`` with nearest neighbour (``eps.py:22``, ``F.interpolate`` default);
    ``label``: ``B x C`` image labels. A labelled class is *valid* when the share of its rounded softmax area
    that is salient exceeds ``tau`` (``eps.py:35-38``; note the ``1e-4`` is added per pixel before the sum, as
    there). Valid classes add to the foreground map; background and invalid labelled classes form the
    background map, used as ``1 - sum`` (``eps.py:40-55``); the predicted saliency ``lam * fg + (1 - lam) * bg``
    is compared with the saliency by mean squared error (``eps.py:56-58``).
    """
    b, k, h, w = cam.shape
    c = k - 1
    sal = saliency if saliency.dim() == 4 else saliency[:, None]
    sal = F.interpolate(sal.to(cam.dtype), size=(h, w), mode="nearest")
    prob = torch.softmax(cam, dim=1)
    fg_round = torch.round(prob[:, :c].detach())
    overlap = (fg_round * torch.round(sal)).flatten(2).sum(-1)
    area = (fg_round + 1e-4).flatten(2).sum(-1)
    valid = overlap / area > tau                                          # B x C
    labelled = label[:, :c] > 0.5
    fg_sel = (labelled & valid).to(prob.dtype)[:, :, None, None]
    bg_sel = (labelled & ~valid).to(prob.dtype)[:, :, None, None]
    fg = (prob[:, :c] * fg_sel).sum(1, keepdim=True)
    bg = 1.0 - (prob[:, c:] + (prob[:, :c] * bg_sel).sum(1, keepdim=True))
    sal_pred = fg * lam + bg * (1.0 - lam)
    return {"loss": F.mse_loss(sal_pred, sal), "fg": fg, "bg": bg, "sal_pred": sal_pred, "valid": valid}


def eps_saliency_loss(cam: torch.Tensor, saliency: torch.Tensor, label: torch.Tensor, tau: float,
                      lam: float) -> torch.Tensor:
    """The EPS saliency loss (see :func:`eps_saliency_parts`)."""
    return eps_saliency_parts(cam, saliency, label, tau, lam)["loss"]
