"""The float32 gradient-only kernels (pipeline.maths._grad32, reached through
pipeline.maths.losses.gradient_only) against the float64 kernels and, where those lose accuracy,
against 60-digit mpmath; and the placeholder values the training loop relies on."""

import itertools

import mpmath
import pytest
import torch

from pipeline.maths import _grad32, special
from pipeline.maths import losses as Lm
from pipeline.maths import stats as Sm
from pipeline.maths.stats import proxy_precision, teacher_stats
from pipeline.maths.values import gradient_only

# The float32 kernels run eagerly only when the eager backend is asked for (auto keeps small
# batches on the float64 kernels: test_auto_leaves_small_batches_on_float64)
pytestmark = pytest.mark.usefixtures("eager")
F64 = torch.float64
LOSSES = {"end": Lm.end_loss, "end2": Lm.end2_loss, "rkl": Lm.proxy_rkl_loss}
PAPER = {
    "end": {},
    "end2": {"model_offset": 0.0},
    "rkl": {"model_offset": 1.0, "target_offset": 1.0},
}
"""The options a test gives when it names none (the paper's; the losses have no defaults)."""
RTOL = 1e-4  # per row: max |error| <= RTOL * max |exact gradient|


def _row_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float(((got.double() - want).abs().amax(-1) / want.abs().amax(-1)).max())


def _gradients(name, z, stats, kw, grad_only):
    z = z.detach().clone().requires_grad_(True)
    with gradient_only(grad_only) as rec:
        value = LOSSES[name](z, stats, reduction="none", **{**PAPER[name], **kw})
    value.sum().backward()
    return value.detach(), z.grad, rec.placeholders


def _teacher(b, k, member_scale, identical, seed):
    g = torch.Generator().manual_seed(seed)
    mem = member_scale * torch.randn(b, 1 if identical else 3, k, generator=g, dtype=F64)
    mem = mem.expand(b, 3, k) if identical else mem
    lp = torch.log_softmax(mem, -1)
    return lp, teacher_stats(lp), g


# ----------------------------------------------------------------------------- special functions
def test_float32_special_functions_match_mpmath():
    mpmath.mp.dps = 100  # psi(y) - ln y at y = 1e35 cancels 35 digits
    y = torch.cat(
        [torch.logspace(-35, 35, 141, dtype=F64), torch.linspace(0.05, 12, 120, dtype=F64)]
    )
    y = y.float()
    exact_phi = [
        float(mpmath.digamma(mpmath.mpf(v)) - mpmath.log(mpmath.mpf(v))) for v in y.tolist()
    ]
    exact_w = [float(mpmath.mpf(v) * mpmath.psi(1, mpmath.mpf(v)) - 1) for v in y.tolist()]
    for fn, exact, tol32 in (
        (special.digamma_log_gap, exact_phi, 3e-6),
        (special.scaled_trigamma_m1, exact_w, 3e-6),
    ):
        want = torch.tensor(exact, dtype=F64)
        # float32: a few roundings; float64: the series' own truncation (~1e-8)
        assert float(((fn(y).double() - want) / want).abs().max()) < tol32
        assert float(((fn(y.double()) - want) / want).abs().max()) < 3e-8


# ----------------------------------------------------------------------------- against float64
GRID = list(itertools.product([2, 10, 1000, 40000], [1.0, 30.0, 1e4], [False, True], [0.3, 3.0]))
OPTIONS = {
    "end": [{}],
    "end2": [
        {"model_offset": 0.0},
        {"model_offset": 1.0},
        {"model_offset": 0.5, "temperature": 2.5},
    ],
    "rkl": [{}, {"model_offset": 0.0, "target_offset": 0.5}],
}


@pytest.mark.parametrize("mode", ["eager", "compiled"])
def test_float32_gradients_match_float64(monkeypatch, mode):
    """K from 2 to 40,000, member logits up to +-1e4, identical members (beta_0 ~ 1e11): every
    gradient within 1e-4 of the float64 kernels (per row, relative to the row's largest entry)."""
    monkeypatch.setenv(Lm.BACKEND_ENV, mode)
    worst = {}
    for k, member_scale, identical, student_scale in GRID:
        lp, stats, g = _teacher(3, k, member_scale, identical, seed=k)
        z = (student_scale * torch.randn(3, k, generator=g)).float()
        for name, options in OPTIONS.items():
            for kw in options:
                t = kw.get("temperature")
                s = stats if t is None else teacher_stats(lp, temperature=t)
                _, g64, n64 = _gradients(name, z.double(), s, kw, grad_only=False)
                value, g32, n32 = _gradients(name, z, s, kw, grad_only=True)
                assert (n64, n32) == (0, 1)  # float64 logits never take the float32 path
                assert g32.dtype == torch.float32 and value.abs().max() == 0
                err = _row_error(g32, g64)
                key = (name, str(kw))
                worst[key] = max(worst.get(key, 0.0), err)
    assert max(worst.values()) <= RTOL, worst


def _mp_gradient(name, z, teacher, m, big_b=None, t=1.0):
    """The exact gradient (60 digits) of EnD2 (``teacher`` = l_bar) or PD-EnD2 (pi_bar)."""
    mpmath.mp.dps = 60
    rows = []
    for i in range(z.shape[0]):
        x = [mpmath.exp(mpmath.mpf(v) / t) for v in z[i].tolist()]
        a = [xi + m for xi in x]
        a0 = mpmath.fsum(a)
        th = [mpmath.mpf(v) for v in teacher[i].tolist()]
        if name == "rkl":
            big = mpmath.mpf(float(big_b[i]))
            beta = [p * big + 1 for p in th]
            row = (a0 - mpmath.fsum(beta)) * mpmath.psi(1, a0)
            g = [x[c] / big * ((a[c] - beta[c]) * mpmath.psi(1, a[c]) - row) for c in range(len(x))]
        else:
            g = [
                t * x[c] * (mpmath.digamma(a[c]) - mpmath.digamma(a0) - th[c])
                for c in range(len(x))
            ]
        rows.append([float(v) for v in g])
    return torch.tensor(rows, dtype=F64)


@pytest.mark.parametrize(
    ("k", "student_scale", "member_scale", "float64_off"),
    [(2, 30.0, 1e4, False), (1000, 15.0, 1.0, True)],
)
def test_float32_gradients_match_mpmath_at_large_logits(
    k, student_scale, member_scale, float64_off
):
    """Student logits up to ~50 (alpha up to 1e22) against agreeing members: the float32 forms
    stay within 1e-4 of the exact gradient, where the float64 PD-EnD2 kernel itself cancels
    (``x_c / B`` times a difference of two ~1 terms) and is off by far more."""
    _, stats, g = _teacher(2, k, member_scale, True, seed=3)
    z = (student_scale * torch.randn(2, k, generator=g)).float()
    assert _grad32.fits(z)
    big_b = proxy_precision(stats) + k
    exact_rkl = _mp_gradient("rkl", z, stats.mean_probs, 1.0, big_b)
    exact_end2 = _mp_gradient("end2", z, stats.floored_mean_log_probs, 0.0)
    _, rkl32, _ = _gradients("rkl", z, stats, {}, grad_only=True)
    _, end2_32, _ = _gradients("end2", z, stats, {"model_offset": 0.0}, grad_only=True)
    assert _row_error(rkl32, exact_rkl) <= RTOL
    assert _row_error(end2_32, exact_end2) <= RTOL
    if float64_off:
        _, rkl64, _ = _gradients("rkl", z.double(), stats, {}, grad_only=False)
        assert _row_error(rkl64, exact_rkl) > 100 * _row_error(rkl32, exact_rkl)


# ----------------------------------------------------------------------------- placeholders
def test_placeholder_is_nan_exactly_where_the_gradient_is_not_finite():
    _, stats, _ = _teacher(3, 50, 1.0, False, seed=1)
    z = torch.zeros(3, 50)
    z[1, 4] = float("nan")
    z.requires_grad_(True)
    with gradient_only() as rec:
        value = Lm.proxy_rkl_loss(z, stats, 1.0, 1.0, reduction="none")
    # NaN logits do not fit the float32 kernels: the float64 kernel runs and gives a true value
    assert rec.placeholders == 0 and bool(value[1].isnan()) and bool(value[0].isfinite())
    grad = torch.zeros(3, 50)
    grad[2, 7] = float("inf")
    check = _grad32._check(grad)
    assert check.tolist()[:2] == [0.0, 0.0] and check[2].isnan()


def test_logits_outside_the_float32_range_take_the_float64_kernels():
    lp, stats, _ = _teacher(2, 20, 1.0, False, seed=2)
    for bad in (_grad32.logit_max32(20) + 1.0, _grad32.LOGIT_MIN32 - 1.0):
        z = torch.zeros(2, 20)
        z[0, 0] = bad
        z.requires_grad_(True)
        with gradient_only() as rec:
            value = Lm.proxy_rkl_loss(z, stats, 1.0, 1.0)
        assert rec.placeholders == 0 and value.item() > 0
    # EnD2's bound applies to z / T
    z = torch.full((2, 20), 0.9 * _grad32.logit_max32(20)).requires_grad_(True)
    with gradient_only() as rec:
        Lm.end2_loss(z, stats, 0.0)
    assert rec.placeholders == 1
    t_stats = teacher_stats(lp, temperature=0.5)
    with gradient_only() as rec:
        Lm.end2_loss(z, t_stats, 0.0, temperature=0.5)
    assert rec.placeholders == 0


def test_gradient_only_blocks_nest_and_restore():
    _, stats, _ = _teacher(2, 20, 1.0, False, seed=4)
    z = torch.zeros(2, 20, requires_grad=True)
    with gradient_only() as outer:
        Lm.end_loss(z, stats)
        with gradient_only(False) as inner:
            assert Lm.end_loss(z, stats).item() > 0
        Lm.end_loss(z, stats)
    assert (outer.placeholders, inner.placeholders) == (2, 0)
    assert Lm.end_loss(z, stats).item() > 0  # outside: values again
    # no gradient wanted: the value is always computed
    with gradient_only() as rec, torch.no_grad():
        assert Lm.end_loss(z, stats).item() > 0
    assert rec.placeholders == 0
    # the forward-KL ablation has no float32 kernel
    with gradient_only() as rec:
        assert Lm.proxy_fkl_loss(z, stats, 1.0, 1.0).item() > 0
    assert rec.placeholders == 0


def test_the_value_needs_float64():
    """Why the float32 kernels give no value: at agreeing members (beta_0 ~ 1e10) the PD-EnD2
    value is a sum of lnGamma terms of size ~1e11 cancelling to a small number; in float32 its
    error is ~1e-6 absolute, all of it for a student within 0.1 % of the target."""
    from pipeline.maths.dirichlet import dirichlet_kl

    _, stats, g = _teacher(2, 1000, 1.0, True, seed=5)
    big_b = proxy_precision(stats) + 1000
    beta = stats.mean_probs * big_b[:, None] + 1
    alpha = beta * (1 + 1e-3 * torch.rand(2, 1000, generator=g, dtype=F64))
    exact = dirichlet_kl(alpha, beta) / big_b
    in_float32 = dirichlet_kl(alpha.float(), beta.float()).double() / big_b
    assert bool((exact > 0).all())
    assert float(((in_float32 - exact) / exact).abs().min()) > 0.5


def test_auto_leaves_small_batches_on_float64(monkeypatch):
    """In ``auto`` mode the float32 kernels run compiled only (from COMPILE_MIN_NUMEL logits):
    eagerly, their few dozen small ops cost more than the float64 kernel on small batches."""
    monkeypatch.setenv(Lm.BACKEND_ENV, "auto")
    _, small, _ = _teacher(4, 50, 1.0, False, seed=6)
    z = torch.zeros(4, 50, requires_grad=True)
    with gradient_only() as rec:
        assert Lm.proxy_rkl_loss(z, small, 1.0, 1.0).item() > 0
    assert rec.placeholders == 0
    k = Lm.COMPILE_MIN_NUMEL // 4
    _, large, _ = _teacher(4, k, 1.0, False, seed=7)
    z = torch.zeros(4, k, requires_grad=True)
    with gradient_only() as rec:
        assert Lm.proxy_rkl_loss(z, large, 1.0, 1.0).item() == 0.0
    assert rec.placeholders == 1


@pytest.mark.parametrize("identical", [False, True])
def test_float32_online_statistics_feed_the_float32_kernels(monkeypatch, identical):
    """The token task's path: float32 statistics from online_teacher_stats (pi_bar summing to 1
    only up to float32 rounding), the float32 gradient, against float64 statistics and kernels."""
    monkeypatch.setenv(Lm.BACKEND_ENV, "compiled")
    k = 20000
    lp, ref, g = _teacher(4, k, 4.0, identical, seed=8)
    online = Sm.online_teacher_stats(list(lp.float().unbind(1)))
    assert online.mean_probs.dtype == torch.float32
    z = (3.0 * torch.randn(4, k, generator=g)).float()
    for name, kw in (("end", {}), ("end2", {"model_offset": 0.0}), ("rkl", {})):
        _, g64, _ = _gradients(name, z.double(), ref, kw, grad_only=False)
        value, g32, n = _gradients(name, z, online, kw, grad_only=True)
        assert n == 1 and _row_error(g32, g64) <= RTOL, name
        # a value step (float64 kernels) widens the float32 statistics
        v64, _, _ = _gradients(name, z, online, kw, grad_only=False)
        want, _, _ = _gradients(name, z, ref, kw, grad_only=False)
        assert bool(((v64 - want).abs() <= 1e-4 * want.abs().clamp_min(1.0)).all()), name
