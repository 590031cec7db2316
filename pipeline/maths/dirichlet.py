"""The student's Dirichlet: constants, input checks, concentrations and closed forms.

Formulas: ``docs/method.md``. Shapes: ``B`` examples (or tokens), ``K`` classes. Numerical guards
(tested at K = 40,000): student logits are clamped to ``[LOGIT_MIN, logit_max(K)]`` before ``exp``
so that ``alpha_0 <= finfo(float64).max / 2**30`` and every ``lgamma``/product stays finite; member
log-probabilities are floored at ``LOG_PROB_FLOOR = ln(finfo(float64).tiny)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "EPS",
    "LOGIT_MIN",
    "LOG_PROB_FLOOR",
    "check_matrix",
    "check_positive",
    "dirichlet_entropy",
    "dirichlet_kl",
    "logit_max",
    "student_alphas",
]

EPS = 1.1920929e-7
"""float32 machine epsilon: the floor inside ln(pi + eps) and the guard in beta_hat_0."""

LOG_PROB_FLOOR = math.log(torch.finfo(torch.float64).tiny)
"""ln of the smallest normal float64 (about -708.4): floor for member log-probabilities."""

LOGIT_MIN = -300.0
"""Student logits below this are clamped (exp(-300) ~ 5e-131 keeps digamma/trigamma finite)."""

F64 = torch.float64
_LOGF64_MAX = math.log(torch.finfo(F64).max)
_HEADROOM = 30.0 * math.log(2.0)


def logit_max(num_classes: int) -> float:
    """Largest student logit used in ``exp``: keeps ``alpha_0 <= finfo(float64).max / 2**30``."""
    return _LOGF64_MAX - math.log(num_classes) - _HEADROOM


# ----------------------------------------------------------------------------- validation
def check_matrix(name: str, t: object) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{name} must have shape [B, K], got shape {tuple(t.shape)}")
    if t.shape[0] < 1 or t.shape[1] < 2:
        raise ValueError(f"{name} needs B >= 1 rows and K >= 2 classes, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return t


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    value = float(value)
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value}")
    return value


def student_alphas(logits: Tensor, offset: float) -> Tensor:
    """Dirichlet concentrations of the student: ``alpha = exp(z) + offset``.

    Args:
        logits: ``[B, K]`` student logits, any floating dtype.
        offset: model offset ``m_off >= 0`` (1 for PD-EnD2, 0 for the original EnD2).

    Returns:
        ``[B, K]`` float64 concentrations; ``z`` is clamped to ``[LOGIT_MIN, logit_max(K)]``
        first so ``alpha_0`` never overflows. Differentiable with respect to ``logits``.
    """
    check_matrix("logits", logits)
    offset = check_positive("offset", offset, allow_zero=True)
    z = logits.to(F64).clamp(LOGIT_MIN, logit_max(logits.shape[-1]))
    return z.exp() + offset


# ----------------------------------------------------------------------------- closed forms
def dirichlet_kl(alpha: Tensor, beta: Tensor) -> Tensor:
    """``KL[Dir(alpha) || Dir(beta)]`` per row, ``[B, K] x [B, K] -> [B]`` (autograd-friendly)."""
    check_matrix("alpha", alpha)
    check_matrix("beta", beta)
    if alpha.shape != beta.shape:
        raise ValueError(
            f"alpha has shape {tuple(alpha.shape)} but beta has shape {tuple(beta.shape)}"
        )
    a0 = alpha.sum(-1)
    b0 = beta.sum(-1)
    e_log = torch.digamma(alpha) - torch.digamma(a0)[:, None]
    return (
        torch.lgamma(a0)
        - torch.lgamma(alpha).sum(-1)
        - torch.lgamma(b0)
        + torch.lgamma(beta).sum(-1)
        + ((alpha - beta) * e_log).sum(-1)
    )


def dirichlet_entropy(alpha: Tensor) -> Tensor:
    """Differential entropy ``H[Dir(alpha)]`` per row, ``[B, K] -> [B]``."""
    check_matrix("alpha", alpha)
    a0 = alpha.sum(-1)
    e_log = torch.digamma(alpha) - torch.digamma(a0)[:, None]
    return torch.lgamma(alpha).sum(-1) - torch.lgamma(a0) - ((alpha - 1.0) * e_log).sum(-1)
