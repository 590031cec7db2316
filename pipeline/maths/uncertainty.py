"""Uncertainty measures of an ensemble and of a Dirichlet student (docs/method.md, "Uncertainty").

Both functions return a dict of ``[B]`` float64 tensors with the keys of :data:`MEASURES`:

* ``total``      TU = H[E p]                                   (entropy of the mean)
* ``data``       DU = E H[p]                                    (expected entropy)
* ``knowledge``  MI = TU - DU                                   (mutual information)
* ``epkl``       expected pairwise KL = MI + RMI
* ``rmi``        reverse mutual information = EPKL - MI
* ``confidence`` max_c of the mean prediction (the OOD score is its negative; see :func:`scores`)
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.maths.dirichlet import LOG_PROB_FLOOR

__all__ = [
    "MEASURES",
    "SCORES",
    "categorical_uncertainty",
    "dirichlet_uncertainty",
    "ensemble_uncertainty",
    "scores",
]

MEASURES = ("total", "data", "knowledge", "epkl", "rmi", "confidence")
SCORES = ("total", "data", "knowledge", "epkl", "rmi", "neg_confidence")
"""The uncertainty scores (higher = more uncertain) every evaluation reports, in this order."""
_F64 = torch.float64


def _entropy(p: Tensor) -> Tensor:
    return -torch.xlogy(p, p).sum(-1)


def ensemble_uncertainty(member_probs: Tensor) -> dict[str, Tensor]:
    """Measures of an ensemble from member probabilities ``[B, M, K]``.

    EPKL is averaged over the ``M^2`` ordered member pairs. Log-probabilities are floored at
    ``LOG_PROB_FLOOR`` (so a member with an exact zero where another has mass gives a large,
    finite EPKL/RMI instead of ``inf``). MI and RMI are computed in their KL forms
    (``mean_m KL[p_m || p_bar]`` and ``sum_c p_bar_c (ln p_bar_c - l_bar_c)``), which are
    accurate when the members nearly agree; TU = DU + MI and EPKL = MI + RMI hold to rounding.
    """
    if not isinstance(member_probs, Tensor) or member_probs.ndim != 3:
        shape = tuple(getattr(member_probs, "shape", ()))
        raise ValueError(f"member_probs must be a [B, M, K] tensor, got shape {shape}")
    if member_probs.shape[1] < 1 or member_probs.shape[2] < 2:
        raise ValueError(f"member_probs needs M >= 1 and K >= 2, got {tuple(member_probs.shape)}")
    p = member_probs.to(_F64)
    logp = torch.log(p).clamp_min(LOG_PROB_FLOOR)
    pbar = p.mean(1)
    log_pbar = torch.log(pbar).clamp_min(LOG_PROB_FLOOR)
    lbar = logp.mean(1)
    total = _entropy(pbar)
    data = _entropy(p).mean(1)
    knowledge = (p * (logp - log_pbar[:, None, :])).sum(-1).mean(1)
    rmi = (pbar * (log_pbar - lbar)).sum(-1)
    return {
        "total": total,
        "data": data,
        "knowledge": knowledge,
        "epkl": knowledge + rmi,
        "rmi": rmi,
        "confidence": pbar.amax(-1),
    }


def categorical_uncertainty(probs: Tensor) -> dict[str, Tensor]:
    """Measures of one categorical prediction ``probs [B, K]`` (a single model, an EnD student):
    TU = DU = H[p], no knowledge uncertainty (MI = EPKL = RMI = 0)."""
    return ensemble_uncertainty(probs[:, None, :])


def dirichlet_uncertainty(alphas: Tensor) -> dict[str, Tensor]:
    """Measures of a Dirichlet ``Dir(alpha)``, ``alphas [B, K] > 0``, with ``p = alpha / alpha_0``.

    ``DU = -sum_c p_c [psi(alpha_c + 1) - psi(alpha_0 + 1)]``, ``EPKL = (K - 1) / alpha_0``
    exactly, ``RMI = sum_c p_c [ln p_c - psi(alpha_c) + psi(alpha_0)]``.
    """
    if not isinstance(alphas, Tensor) or alphas.ndim != 2 or alphas.shape[1] < 2:
        shape = tuple(getattr(alphas, "shape", ()))
        raise ValueError(f"alphas must be a [B, K] tensor with K >= 2, got shape {shape}")
    a = alphas.to(_F64)
    k = a.shape[1]
    a0 = a.sum(-1)
    p = a / a0[:, None]
    total = _entropy(p)
    data = -(p * (torch.digamma(a + 1.0) - torch.digamma(a0 + 1.0)[:, None])).sum(-1)
    rmi = (p * (torch.log(p) - torch.digamma(a) + torch.digamma(a0)[:, None])).sum(-1)
    return {
        "total": total,
        "data": data,
        "knowledge": total - data,
        "epkl": (k - 1) / a0,
        "rmi": rmi,
        "confidence": p.amax(-1),
    }


def scores(measures: dict[str, Tensor]) -> dict[str, Tensor]:
    """Turn measures into uncertainty scores (higher = more uncertain): ``confidence`` -> its
    negative, stored under ``"neg_confidence"``; the other measures unchanged."""
    out = {k: v for k, v in measures.items() if k != "confidence"}
    out["neg_confidence"] = -measures["confidence"]
    return out
