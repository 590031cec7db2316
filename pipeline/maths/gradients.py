"""Where a loss puts its gradient (``docs/method.md``, "Why EnD2 fails at many classes"): the
share of ``sum_c |dL/dz_c|`` that falls on the head classes of the ensemble's mean prediction.
Used by the synthetic analysis (:mod:`pipeline.stages.gradient_analysis`) and by the tasks'
real-data diagnostics alike, so both read "head" the same way."""

from __future__ import annotations

from torch import Tensor

__all__ = ["HEAD_THRESHOLD", "head_mask", "head_share"]

HEAD_THRESHOLD = 1e-3
"""A class is in the head of a row when the ensemble gives it ``pi_bar_c >= HEAD_THRESHOLD``."""


def head_mask(mean_probs: Tensor) -> Tensor:
    """``[B, K]`` bool: the head classes of each row of ``pi_bar`` ``[B, K]``."""
    return mean_probs >= HEAD_THRESHOLD


def head_share(grad_abs: Tensor, mean_probs: Tensor) -> Tensor:
    """Share of ``sum_c |g_c|`` on the head classes, per row: ``grad_abs [B, K]`` (``|dL/dz|``)
    and ``mean_probs [B, K]`` -> ``[B]`` in ``[0, 1]`` (0 for a row without gradient)."""
    return (grad_abs * head_mask(mean_probs)).sum(-1) / grad_abs.sum(-1).clamp_min(1e-300)
