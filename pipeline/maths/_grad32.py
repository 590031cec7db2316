"""float32 gradient kernels of EnD, EnD2 and PD-EnD2 (private: :mod:`pipeline.maths.losses` calls
them inside :func:`pipeline.maths.losses.gradient_only`).

Each kernel maps student logits ``z [B, K]`` (float32) and the teacher tensors to
``(check [B], dL/dz [B, K])``: the gradient in float32, and ``check = 0 * (row sum of the
gradient)``, 0 where the row is finite and NaN where it is not (the training loop's divergence
check, at no extra pass). No loss value: the value needs ``lnGamma`` of ``alpha`` and ``beta`` up to
~1e11, whose float32 sums cancel to O(1) (``tests/maths/test_grad32.py`` shows the loss of
accuracy); the float64 kernels of :mod:`pipeline.maths._kernels` give it on the steps that log it
(``loss_value_every`` in :mod:`pipeline.engine`).

What keeps float32 well conditioned (``docs/method.md`` has the gradients):

* row quantities (``alpha_0``, its digamma / trigamma, ``beta_0``) are float64 sums and float64
  special functions of ``[B]`` vectors, cast once;
* no ``psi`` or ``psi'`` of a large argument is formed: ``psi(a) - psi(b) = ln(a / b) + phi(a) -
  phi(b)`` with ``phi = psi - ln`` small (:func:`pipeline.maths.special.digamma_log_gap`), and
  ``y psi'(y) = 1 + w(y)`` with ``w`` small (:func:`pipeline.maths.special.scaled_trigamma_m1`),
  so the PD-EnD2 gradient becomes a sum of O(1) terms (``p_model``- and ``p_target``-like)
  whatever the scale of ``alpha`` and ``beta`` (:func:`rkl_grad`);
* ``x psi(alpha)`` for tiny ``alpha`` (``m_off = 0``) is ``x (ln alpha + phi(alpha))`` with
  ``x phi(alpha) ~ -x / alpha``, finite;
* a class holding more than half of a row's mass gets its complements (``alpha_0 - alpha_c``,
  ``1 - pi_bar_c``) in float64, so ``ln(alpha_c / alpha_0)`` and ``p_c - pi_bar_c`` keep their
  accuracy when both are ``1 - 1e-10``.

The forward-KL ablation has no float32 kernel: its ``psi(alpha_c) - psi(beta_c)`` of close
arguments near 1 cancels to float32 rounding (measured 2.5e-4 relative at K = 2 written this
way), so it keeps its float64 kernels.

The kernels hold for logits (divided by ``T`` for EnD2) in ``[LOGIT_MIN32, logit_max32(K)]``;
outside, :func:`fits` is false and the float64 kernels are used for that batch. Every kernel is one
function of tensor arithmetic: run eagerly, or compiled by ``torch.compile`` (CPU and CUDA alike).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pipeline.maths.special import digamma_log_gap, scaled_trigamma_m1

F32, F64 = torch.float32, torch.float64
LOGIT_MIN32 = -80.0
"""Smallest logit of the float32 kernels: ``exp(-80) ~ 2e-35`` and its reciprocal are normal."""


def logit_max32(num_classes: int) -> float:
    """Largest logit of the float32 kernels: ``alpha_0 <= e^80 ~ 5e34``, so ``1 / alpha_0`` is
    normal and every product of the kernels stays finite (69.4 at K = 40,000)."""
    return 80.0 - math.log(num_classes)


def fits(z: Tensor, temperature: float = 1.0) -> bool:
    """Whether the float32 kernels hold for logits ``z [B, K]`` (tempered by ``temperature``)."""
    lo, hi = torch.aminmax(z.detach())
    lo, hi = float(lo) / temperature, float(hi) / temperature
    return LOGIT_MIN32 <= lo and hi <= logit_max32(z.shape[-1])  # False for NaN


def _check(grad: Tensor) -> Tensor:
    return grad.sum(-1, dtype=F64) * 0.0


def _log_share(a: Tensor, a0: Tensor, exact: Tensor | None = None) -> Tensor:
    """``ln(a / a0)`` for ``a [B, K]`` (float32, positive) and its float64 row sum ``a0 [B, 1]``:
    ``ln a - ln a0`` (the share itself can underflow float32), or where ``a > a0 / 2`` (one class
    per row at most) ``-log1p((a0 - a) / a)`` with the complement ``a0 - a`` taken in float64, so a
    dominant class keeps its ``ln(1 - 1e-10)``. ``exact``: the float64 values ``a`` was rounded
    from, whose sum ``a0`` is (so the complement is exact)."""
    rest = (a0 - (a if exact is None else exact).to(F64)).to(F32)
    dominant = a > (0.5 * a0).to(F32)
    return torch.where(dominant, -torch.log1p(rest / a), torch.log(a) - torch.log(a0).to(F32))


def end_grad(z: Tensor, pbar: Tensor) -> tuple[Tensor, Tensor]:
    """EnD: ``p S - pi_bar`` with ``p = softmax(z)``, ``S = sum(pi_bar)``; where ``p_c > 1/2``
    as ``(S - pi_bar_c) - S (1 - p_c)``, both complements exact enough."""
    u = z.to(F32)
    x = torch.exp(u - u.amax(-1, keepdim=True))
    x0 = x.sum(-1, keepdim=True, dtype=F64)
    p = x * (1.0 / x0).to(F32)
    big_s = pbar.sum(-1, keepdim=True, dtype=F64)
    direct = p * big_s.to(F32) - pbar.to(F32)
    one_minus_p = ((x0 - x.to(F64)) / x0).to(F32)
    dominant = (big_s - pbar.to(F64)).to(F32) - big_s.to(F32) * one_minus_p
    grad = torch.where(p > 0.5, dominant, direct)
    return _check(grad), grad


def end2_grad(z: Tensor, lbar: Tensor, m: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """EnD2: ``T x_c [psi(alpha_c) - psi(alpha_0) - l_c]``, ``x = exp(z / T)``,
    ``alpha = x + m``, written ``T x_c [ln(alpha_c / alpha_0) + phi(alpha_c) - phi(alpha_0) -
    l_c]``."""
    x = torch.exp(z.to(F32) / t.to(F32))
    alpha = x + m.to(F32)
    alpha0 = alpha.sum(-1, keepdim=True, dtype=F64)
    phi0 = (torch.digamma(alpha0) - torch.log(alpha0)).to(F32)
    inner = _log_share(alpha, alpha0) + digamma_log_gap(alpha) - phi0 - lbar.to(F32)
    grad = (t.to(F32) * x) * inner
    return _check(grad), grad


def rkl_grad(z: Tensor, pbar: Tensor, big_b: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """PD-EnD2: ``x_c / B [(alpha_c - beta_c) psi'(alpha_c) - (alpha_0 - beta_0) psi'(alpha_0)]``
    with ``beta = pi_bar B + 1`` (``beta_0 = B S + K``, ``S = sum(pi_bar)``). With
    ``w(y) = y psi'(y) - 1``, ``q_c = x_c / alpha_0``, ``r_c = x_c / alpha_c``,
    ``A = (beta_0 / B)(1 + w_0)`` and ``C_c = (beta_c / B)(1 + w_c)``:
    ``g_c = x_c (w_c - w_0) / B + q_c A - r_c C_c``, every term O(1) whatever the scale of
    ``alpha`` and ``beta``; where ``q_c > 1/2`` the last two as ``(A - C_c) - (1 - q_c) A + (1 -
    r_c) C_c`` with ``A - C_c`` from ``(beta_0 - beta_c) / B = (S - pi_bar_c) + (K - 1) / B``."""
    x = torch.exp(z.to(F32))
    mf = m.to(F32)
    alpha = x + mf
    k = z.shape[-1]
    b64 = big_b[:, None].to(F64)
    big_s = pbar.sum(-1, keepdim=True, dtype=F64)  # 1 up to the rounding of pi_bar's dtype
    beta0_b = (b64 * big_s + k) / b64  # beta_0 / B
    alpha0 = alpha.sum(-1, keepdim=True, dtype=F64)
    w0_64 = alpha0 * torch.polygamma(1, alpha0) - 1.0
    a_row = (beta0_b * (1.0 + w0_64)).to(F32)
    w0, inv_b = w0_64.to(F32), (1.0 / b64).to(F32)
    w = scaled_trigamma_m1(alpha)
    beta_b = pbar.to(F32) + inv_b
    c = beta_b * (1.0 + w)
    q = x * (1.0 / alpha0).to(F32)
    r = x / alpha
    direct = q * a_row - r * c
    # (beta_0 - beta_c) / B = (S - pi_bar_c) + (K - 1) / B, the complement in float64
    gap = (big_s - pbar.to(F64) + (k - 1) / b64).to(F32) + beta0_b.to(F32) * w0 - beta_b * w
    one_minus_q = ((alpha0 - x.to(F64)) / alpha0).to(F32)
    dominant = gap - one_minus_q * a_row + (mf / alpha) * c
    grad = x * (w - w0) * inv_b + torch.where(q > 0.5, dominant, direct)
    return _check(grad), grad


KERNELS = {"end": end_grad, "end2": end2_grad, "rkl": rkl_grad}
