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
