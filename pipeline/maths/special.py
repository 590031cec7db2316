"""Fused float64 ``lnGamma``, ``digamma`` and ``trigamma`` as plain tensor arithmetic.

Why hand-written: ``torch.lgamma``/``torch.digamma``/``torch.polygamma`` are separate passes of
scalar code over ``[B, K]``; at K = 40,000 they cost more than the whole EnD loss. Written as
element-wise arithmetic, ``torch.compile`` fuses all three (and the loss around them) into one
vectorised loop: see ``pipeline.dirichlet`` (compiled backend) and ``benchmarks/bench_losses.py``.
Eagerly they are slower than torch's own; they exist to be compiled.

Method, for ``x > 0``: for ``x < 10`` shift by ten with the recurrences
``lnG(x) = lnG(x + 10) - ln prod_k (x + k)``, ``psi(x) = psi(x + 10) - sum_k 1/(x + k)``,
``psi'(x) = psi'(x + 10) + sum_k 1/(x + k)^2`` (k = 0..9), then the Stirling / Bernoulli
asymptotic series at ``y >= 10`` truncated where the next term is below 1e-16.
Accuracy against torch's functions (``tests/test_special.py``): < 1e-14 absolute for
``lnG`` and ``psi`` (relative where |value| > 1), < 1e-13 relative for ``psi'``, on
``x in [1e-130, 1e200]``.

Shapes: any; element-wise. Inputs must be float64 and positive.
"""

from __future__ import annotations

import math

from torch import Tensor

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_SHIFT = 10  # recurrence steps; the series is used at y >= _SHIFT


def _lgamma_series(y: Tensor, r: Tensor, r2: Tensor, log_y: Tensor) -> Tensor:
    # (y - 1/2) ln y - y + ln(2 pi)/2 + sum_n B_2n / (2n (2n - 1) y^(2n-1)),  n = 1..8
    s = -3617 / 122400
    for c in (1 / 156, -691 / 360360, 1 / 1188, -1 / 1680, 1 / 1260, -1 / 360, 1 / 12):
        s = c + r2 * s
    return (y - 0.5) * log_y - y + _HALF_LOG_2PI + r * s


def lgamma(x: Tensor) -> Tensor:
    """``ln Gamma(x)`` for float64 ``x > 0``."""
    small = x < _SHIFT
    y = x.where(~small, x + _SHIFT)
    prod = x
    for k in range(1, _SHIFT):
        prod = prod * (x + k)
    r = 1.0 / y
    out = _lgamma_series(y, r, r * r, y.log())
    return out.where(~small, out - prod.log())


def gamma_family(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(ln Gamma(x), digamma(x), trigamma(x))`` for float64 ``x > 0``, sharing one shift."""
    small = x < _SHIFT
    y = x.where(~small, x + _SHIFT)
    # pairs (a, b) = (x + 2j, x + 2j + 1) share one reciprocal: 5 divisions instead of 10
    prod = s1 = s2 = None
    for j in range(0, _SHIFT, 2):
        a = x + j
        b = a + 1.0
        d = a * b
        inv = 1.0 / d
        t1 = (a + b) * inv
        t2 = (a * a + b * b) * (inv * inv)
        prod, s1, s2 = (d, t1, t2) if prod is None else (prod * d, s1 + t1, s2 + t2)
    r = 1.0 / y
    r2 = r * r
    log_y = y.log()
    lg = _lgamma_series(y, r, r2, log_y)
    # psi(y) = ln y - 1/(2y) - sum_n B_2n / (2n y^2n),  n = 1..7
    d = 1 / 12
    for c in (-691 / 32760, 1 / 132, -1 / 240, 1 / 252, -1 / 120, 1 / 12):
        d = c + r2 * d
    dg = log_y - 0.5 * r - r2 * d
    # psi'(y) = 1/y + 1/(2y^2) + sum_n B_2n / y^(2n+1),  n = 1..7
    t = 7 / 6
    for c in (-691 / 2730, 5 / 66, -1 / 30, 1 / 42, -1 / 30, 1 / 6):
        t = c + r2 * t
    tg = r + 0.5 * r2 + r * r2 * t
    return (
        lg.where(~small, lg - prod.log()),
        dg.where(~small, dg - s1),
        tg.where(~small, tg + s2),
    )


# ----------------------------------------------------------------------------- float32 forms
# The float32 gradient kernels (pipeline.maths._grad32) never form psi or psi' of a large
# argument directly: psi(y) ~ ln y and y psi'(y) ~ 1 carry the scale, so they are written as
# ``phi(y) = psi(y) - ln y`` (small, so ``psi(a) - psi(b) = ln(a / b) + phi(a) - phi(b)`` keeps
# its relative accuracy when a ~ b ~ 1e11) and ``w(y) = y psi'(y) - 1`` (about 1/(2y) for large
# y, 1/y for tiny y). A shift of six and four or five series terms reach ~1e-8 relative, below
# float32's rounding; any floating dtype works (float64 inputs give ~1e-8, not 1e-15: use the
# functions above there).
_SHIFT32 = 6


def digamma_log_gap(y: Tensor) -> Tensor:
    """``phi(y) = psi(y) - ln y`` for ``y > 0`` (about ``-1/(2y)`` for large ``y``, ``-1/y``
    for tiny ``y``), to ~1e-8 relative."""
    small = y < _SHIFT32
    u = y.where(~small, y + _SHIFT32)
    r = 1.0 / u
    r2 = r * r
    # psi(u) - ln u = -1/(2u) - 1/(12u^2) + 1/(120u^4) - 1/(252u^6) + 1/(240u^8)
    series = -0.5 * r - r2 * (1 / 12 + r2 * (-1 / 120 + r2 * (1 / 252 - r2 * (1 / 240))))
    # phi(y) = phi(y + 6) + ln((y + 6) / y) - sum_{k<6} 1/(y + k); pairs share a division
    a0, a2, a4 = y, y + 2.0, y + 4.0
    inv = (2.0 * a0 + 1.0) / (a0 * (a0 + 1.0))
    inv = inv + (2.0 * a2 + 1.0) / (a2 * (a2 + 1.0)) + (2.0 * a4 + 1.0) / (a4 * (a4 + 1.0))
    shifted = series + (u / y).log() - inv
    return series.where(~small, shifted)


def scaled_trigamma_m1(y: Tensor) -> Tensor:
    """``w(y) = y psi'(y) - 1`` for ``y > 0`` (about ``1/(2y)`` for large ``y``, ``1/y`` for tiny
    ``y``), to ~1e-8 relative: ``y psi'(y)`` less its limit 1, so that differences such as
    ``w(alpha_c) - w(alpha_0)`` keep their relative accuracy."""
    small = y < _SHIFT32
    u = y.where(~small, y + _SHIFT32)
    r = 1.0 / u
    r2 = r * r
    # u psi'(u) - 1 = 1/(2u) + 1/(6u^2) - 1/(30u^4) + 1/(42u^6) - 1/(30u^8)
    w_u = 0.5 * r + r2 * (1 / 6 + r2 * (-1 / 30 + r2 * (1 / 42 - r2 * (1 / 30))))
    # y psi'(y) = (y / u) u psi'(u) + 1/y + sum_{k=1..5} y / (y + k)^2   (>= 1.09 here)
    tail = 0.0
    for k in range(1, _SHIFT32):
        a = y + k
        tail = tail + y / (a * a)
    shifted = (y / u) * (1.0 + w_u) + 1.0 / y + tail - 1.0
    return w_u.where(~small, shifted)
