"""Where a loss puts its gradient (``docs/method.md``, "Why EnD2 fails at many classes"): the
share of ``sum_c |dL/dz_c|`` that falls on the head classes of the ensemble's mean prediction.
Used by the synthetic analysis (:mod:`pipeline.stages.gradient_analysis`) and by the tasks'
real-data diagnostics alike, so both read "head" the same way."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["HEAD_THRESHOLD", "head_mask", "head_share", "mismatch_gradient"]

HEAD_THRESHOLD = 1e-3
"""A class is in the head of a row when the ensemble gives it ``pi_bar_c >= HEAD_THRESHOLD``."""


def head_mask(mean_probs: Tensor) -> Tensor:
    """``[B, K]`` bool: the head classes of each row of ``pi_bar`` ``[B, K]``."""
    return mean_probs >= HEAD_THRESHOLD


def head_share(grad_abs: Tensor, mean_probs: Tensor) -> Tensor:
    """Share of ``sum_c |g_c|`` on the head classes, per row: ``grad_abs [B, K]`` (``|dL/dz|``)
    and ``mean_probs [B, K]`` -> ``[B]`` in ``[0, 1]`` (0 for a row without gradient)."""
    return (grad_abs * head_mask(mean_probs)).sum(-1) / grad_abs.sum(-1).clamp_min(1e-300)


def mismatch_gradient(
    loss: str, precision: float, k: int = 10, mismatch: float = 1e-3, offsets: float = 1.0
) -> float:
    """``max_c |dL/dz_c|`` of a proxy loss (``"pd_end2"``, the reverse KL normalised by
    ``beta_0``; ``"pd_fkl"``, the forward KL, not normalised) for one example whose student has
    the target's precision but a mean off by ``mismatch``.

    The ensemble: ``pi_bar = softmax(linspace(2, -2, K))`` with the RMI that gives the proxy
    precision ``beta_hat_0 = precision``; the target ``beta = pi_bar beta_hat_0 + t_off``. The
    student: ``alpha = beta + precision * delta`` (``delta = mismatch (e_0 - e_1)``, so
    ``alpha_0 = beta_0``), ``z = ln(alpha - m_off)``; offsets ``m_off = t_off = offsets``. The
    forward KL's gradient grows like ``precision * mismatch``; the reverse KL's stays
    ``~ mismatch`` (``docs/image_task.md``, why PD-FKL fails).
    """
    from pipeline.maths.losses import proxy_fkl_loss, proxy_rkl_loss
    from pipeline.maths.stats import TeacherStats

    losses = {"pd_end2": proxy_rkl_loss, "pd_fkl": proxy_fkl_loss}
    if loss not in losses:
        raise ValueError(f"loss must be one of {sorted(losses)}, got {loss!r}")

    pbar = torch.softmax(torch.linspace(2.0, -2.0, k, dtype=torch.float64), 0)[None]
    rmi = torch.tensor([(k - 1) / (2.0 * precision)], dtype=torch.float64)
    stats = TeacherStats(pbar, torch.log(pbar), rmi, num_members=2)
    delta = torch.zeros_like(pbar)
    delta[0, 0], delta[0, 1] = mismatch, -mismatch
    alpha = pbar * precision + offsets + precision * delta
    if bool((alpha <= offsets).any()):
        raise ValueError("the mismatch is larger than a class's share of the precision")
    z = torch.log(alpha - offsets).requires_grad_(True)
    (grad,) = torch.autograd.grad(losses[loss](z, stats, offsets, offsets), z)
    value = float(grad.abs().max())
    if not math.isfinite(value):
        raise FloatingPointError(f"{loss}: a non-finite gradient at precision {precision}")
    return value
