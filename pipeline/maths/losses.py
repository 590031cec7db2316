"""The distillation losses (public API): EnD, EnD2, PD-EnD2 and the forward-KL ablation.

Formulas: ``docs/method.md``. Every loss takes student logits ``[B, K]`` of any floating dtype,
teacher statistics (:class:`pipeline.maths.stats.TeacherStats`, or raw member log-probs
``[B, M, K]``) and its options, explicitly (no defaults of its own: the pipeline's live in the
method registry, :mod:`pipeline.methods`); it computes in float64 and returns float64 (``[B]``
for ``reduction="none"``, a scalar otherwise); the gradient flows back in the logits' own dtype.
The kernels (eager reference and ``torch.compile``-fused, chosen by :func:`loss_backend`) live in
:mod:`pipeline.maths._kernels`.
Inside :func:`gradient_only` (:mod:`pipeline.maths.values`) EnD, EnD2 and PD-EnD2 compute only
their gradient, in float32 (:mod:`pipeline.maths._grad32`), and return a placeholder value: the
training loop asks for the value on the steps that log it.
``tests/maths/test_losses.py`` pins values to ``torch.distributions`` and gradients to
``torch.autograd.gradcheck``.
"""

from __future__ import annotations

import math

from torch import Tensor

from pipeline.maths._kernels import (
    BACKEND_ENV,
    COMPILE_MIN_NUMEL,
    apply,
    end2_eager,
    end_eager,
    fkl_eager,
    loss_backend,
    rkl_eager,
)
from pipeline.maths.dirichlet import check_matrix, check_positive
from pipeline.maths.stats import TeacherStats, proxy_precision, proxy_target, teacher_stats
from pipeline.maths.values import gradient_only

__all__ = [
    "BACKEND_ENV",
    "COMPILE_MIN_NUMEL",
    "end2_loss",
    "end_loss",
    "gradient_only",
    "loss_backend",
    "proxy_fkl_loss",
    "proxy_rkl_loss",
]

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(per_example: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_example.mean()
    if reduction == "sum":
        return per_example.sum()
    if reduction == "none":
        return per_example
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _resolve_stats(
    stats: TeacherStats | Tensor,
    logits: Tensor,
    *,
    temperature: float | None = None,
    smoothing: float | None = None,
) -> TeacherStats:
    """Accept ``TeacherStats`` or raw ``[B, M, K]`` member log-probs; check them against logits."""
    if isinstance(stats, Tensor):
        stats = teacher_stats(
            stats,
            temperature=1.0 if temperature is None else temperature,
            smoothing=0.0 if smoothing is None else smoothing,
        )
    elif isinstance(stats, TeacherStats):
        if temperature is not None and not math.isclose(stats.temperature, temperature):
            raise ValueError(
                f"stats were built at temperature {stats.temperature} but temperature="
                f"{temperature} was requested; rebuild them with teacher_stats(..., temperature=)"
            )
        if smoothing is not None and not math.isclose(stats.smoothing, smoothing):
            raise ValueError(
                f"stats were built with smoothing {stats.smoothing} but smoothing={smoothing} "
                "was requested; rebuild them with teacher_stats(..., smoothing=)"
            )
    else:
        raise TypeError(
            f"stats must be TeacherStats or a [B, M, K] tensor, got {type(stats).__name__}"
        )
    if stats.num_classes != logits.shape[1]:
        raise ValueError(
            f"student_logits has K={logits.shape[1]} classes but stats has K={stats.num_classes}"
        )
    if stats.batch_size != logits.shape[0]:
        raise ValueError(
            f"student_logits has B={logits.shape[0]} rows but stats has B={stats.batch_size}"
        )
    if stats.mean_probs.device != logits.device:
        stats = stats.to(logits.device)
    return stats


# ----------------------------------------------------------------------------- losses
def end_loss(
    student_logits: Tensor, stats: TeacherStats | Tensor, reduction: str = "mean"
) -> Tensor:
    """EnD (plain ensemble distillation): ``KL[pi_bar || softmax(z)]``.

    Args:
        student_logits: ``[B, K]``.
        stats: :class:`TeacherStats` or ``[B, M, K]`` member log-probs.
        reduction: ``"mean"`` over the batch, ``"sum"``, or ``"none"`` (``[B]``).
    """
    check_matrix("student_logits", student_logits)
    s = _resolve_stats(stats, student_logits)
    value = apply(student_logits, "end", end_eager, (s.mean_probs,), ())
    return _reduce(value, reduction)


def end2_loss(
    student_logits: Tensor,
    stats: TeacherStats | Tensor,
    model_offset: float,
    *,
    temperature: float | None = None,
    smoothing: float | None = None,
    reduction: str = "mean",
) -> Tensor:
    """EnD2: negative log-likelihood of the members under the student's Dirichlet.

    ``L = T^2 [sum_c lnG(alpha_c) - lnG(alpha_0) - sum_c (alpha_c - 1) l_c]`` with
    ``alpha = exp(z / T) + model_offset`` and ``l_c = mean_m ln(pi_m,c + eps)`` (members tempered
    by ``T`` and centrally smoothed, as recorded in ``stats``).

    Args:
        student_logits: ``[B, K]``.
        stats: :class:`TeacherStats` (must carry ``floored_mean_log_probs``) or ``[B, M, K]``
            member log-probs; ``temperature``/``smoothing`` build the stats from the latter, and
            must match the stats' own when both are given.
        model_offset: ``m_off >= 0`` (0 in the original EnD2; the pipeline's default is the
            method registry's, :mod:`pipeline.methods`).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """
    check_matrix("student_logits", student_logits)
    s = _resolve_stats(stats, student_logits, temperature=temperature, smoothing=smoothing)
    if s.floored_mean_log_probs is None:
        raise ValueError(
            "end2_loss needs stats.floored_mean_log_probs (mean_m ln(pi_m + eps)); build the stats "
            "with teacher_stats(member_log_probs) or pass floored_mean_log_probs to "
            "TeacherStats.from_cache"
        )
    m_off = check_positive("model_offset", model_offset, allow_zero=True)
    lbar = s.floored_mean_log_probs
    value = apply(student_logits, "end2", end2_eager, (lbar,), (m_off, s.temperature))
    return _reduce(value, reduction)


def proxy_rkl_loss(
    student_logits: Tensor,
    stats: TeacherStats | Tensor,
    model_offset: float,
    target_offset: float,
    reduction: str = "mean",
) -> Tensor:
    """PD-EnD2: ``KL[Dir(alpha) || Dir(pi_bar * beta_0 + 1)] / beta_0``.

    ``alpha = exp(z) + model_offset``, ``beta_0 = beta_hat_0 + K * target_offset``. A true,
    non-negative KL divided by ``beta_0``: it and its gradient vanish at ``alpha = pi_bar beta_0
    + 1`` (with offsets 1: ``softmax(z) = pi_bar`` and ``sum exp(z) = beta_0``). The gradient is
    ``x_c / beta_0 [(alpha_c - b_c) psi'(alpha_c) - (alpha_0 - b_0) psi'(alpha_0)]``,
    ``~ p_model - p_target``.

    Args:
        student_logits: ``[B, K]``.
        stats: :class:`TeacherStats` or ``[B, M, K]`` member log-probs.
        model_offset, target_offset: ``>= 0`` (1 and 1 in the paper; the pipeline's defaults
            are the method registry's, :mod:`pipeline.methods`).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """
    check_matrix("student_logits", student_logits)
    s = _resolve_stats(stats, student_logits)
    m_off = check_positive("model_offset", model_offset, allow_zero=True)
    t = check_positive("target_offset", target_offset, allow_zero=True)
    big_b = proxy_precision(s) + s.num_classes * t
    value = apply(student_logits, "rkl", rkl_eager, (s.mean_probs, big_b), (m_off,))
    return _reduce(value, reduction)


def proxy_fkl_loss(
    student_logits: Tensor,
    stats: TeacherStats | Tensor,
    model_offset: float,
    target_offset: float,
    reduction: str = "mean",
) -> Tensor:
    """Forward-KL ablation: ``KL[Dir(beta) || Dir(alpha)]`` with ``beta = proxy_target(stats)``.

    Not normalised. Arguments as :func:`proxy_rkl_loss` (student logits ``[B, K]``; here
    ``target_offset > 0``); returns ``[B]`` for ``reduction="none"``, else a scalar.
    """
    check_matrix("student_logits", student_logits)
    s = _resolve_stats(stats, student_logits)
    m_off = check_positive("model_offset", model_offset, allow_zero=True)
    # Dir(beta) needs beta > 0 everywhere; pi_bar may hold exact zeros, so t must be > 0 here.
    beta = proxy_target(s, check_positive("target_offset", target_offset))
    value = apply(student_logits, "fkl", fkl_eager, (beta,), (m_off,))
    return _reduce(value, reduction)
