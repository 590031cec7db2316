"""pipeline.maths.losses against their definitions (torch.distributions, scipy) and under stress."""

import math

import numpy as np
import pytest
import scipy.special as sp
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.distributions import Categorical, Dirichlet, kl_divergence

from pipeline.maths import dirichlet as Dm
from pipeline.maths import losses as Lm
from pipeline.maths.dirichlet import EPS, dirichlet_kl, student_alphas
from pipeline.maths.losses import end2_loss, end_loss, proxy_fkl_loss, proxy_rkl_loss
from pipeline.maths.stats import TeacherStats, proxy_precision, proxy_target, teacher_stats
from tests.maths.synthetic import F64, ensemble, paper, student


def _reference(name, z, lp, **kw):
    """Each loss, computed per example from torch.distributions."""
    s = teacher_stats(
        lp, temperature=kw.get("temperature", 1.0), smoothing=kw.get("smoothing", 0.0)
    )
    if name == "end":
        return kl_divergence(Categorical(probs=s.mean_probs), Categorical(logits=z))
    if name == "end2":
        t, m = kw.get("temperature", 1.0), kw.get("model_offset", 0.0)
        p = (
            torch.softmax(lp / t, -1) * (1 - kw.get("smoothing", 0.0))
            + kw.get("smoothing", 0.0) / lp.shape[-1]
        )
        dist = Dirichlet(torch.exp(z / t) + m, validate_args=False)
        ll = torch.stack([dist.log_prob(p[:, j] + EPS) for j in range(lp.shape[1])], 1)
        return -(t * t) * ll.mean(1)
    m, t = kw.get("model_offset", 1.0), kw.get("target_offset", 1.0)
    alpha = torch.exp(z) + m
    b0 = (lp.shape[-1] - 1) / (2 * s.rmi + EPS)
    if name == "rkl":
        big = b0 + lp.shape[-1] * t
        return kl_divergence(Dirichlet(alpha), Dirichlet(s.mean_probs * big[:, None] + 1)) / big
    return kl_divergence(Dirichlet(s.mean_probs * b0[:, None] + t), Dirichlet(alpha))


LOSSES = {"end": end_loss, "end2": end2_loss, "rkl": proxy_rkl_loss, "fkl": proxy_fkl_loss}
CASES = [
    ("end", {}),
    ("end2", {"model_offset": 0.0}),
    ("end2", {"model_offset": 1.0}),
    ("end2", {"temperature": 2.5, "smoothing": 1e-3, "model_offset": 0.5}),
    ("rkl", {"model_offset": 1.0, "target_offset": 1.0}),
    ("rkl", {"model_offset": 0.0, "target_offset": 0.5}),
    ("fkl", {"model_offset": 1.0, "target_offset": 1.0}),
    ("fkl", {"model_offset": 0.0, "target_offset": 2.0}),
]


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_loss_equals_definition(backend, name, kw):
    lp = ensemble(5, 6, 11, seed=4)
    z = student(5, 11, seed=5)
    got = LOSSES[name](z, lp, reduction="none", **kw)
    want = _reference(name, z, lp, **kw)
    assert got.dtype == F64 and got.shape == (5,)
    torch.testing.assert_close(got, want, rtol=1e-8, atol=0)
    assert LOSSES[name](z, lp, **kw).item() == pytest.approx(want.mean().item(), rel=1e-8)
    assert LOSSES[name](z, lp, reduction="sum", **kw).item() == pytest.approx(
        want.sum().item(), rel=1e-8
    )


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_gradcheck(eager, name, kw):
    lp = ensemble(3, 4, 6, seed=6)
    z = student(3, 6, seed=7).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: LOSSES[name](x, lp, reduction="none", **kw), (z,))


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_compiled_backend_matches_eager(monkeypatch, name, kw):
    lp = ensemble(4, 5, 300, seed=8)
    out = {}
    for mode in ("eager", "compiled"):
        monkeypatch.setenv("PROXY_END2_LOSS_BACKEND", mode)
        z = student(4, 300, seed=9).requires_grad_(True)
        v = LOSSES[name](z, lp, reduction="none", **kw)
        v.sum().backward()
        out[mode] = (v.detach(), z.grad)
    torch.testing.assert_close(out["compiled"][0], out["eager"][0], rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(out["compiled"][1], out["eager"][1], rtol=1e-8, atol=1e-12)


def test_end2_gradient_closed_form(backend):
    lp = ensemble(4, 5, 9, seed=10)
    s = teacher_stats(lp)
    z = student(4, 9, seed=11).requires_grad_(True)
    end2_loss(z, s, model_offset=0.0, reduction="sum").backward()
    a = z.detach().exp().numpy()
    lbar = s.floored_mean_log_probs.numpy()
    want = a * (sp.digamma(a) - sp.digamma(a.sum(1, keepdims=True)) - lbar)
    np.testing.assert_allclose(z.grad.numpy(), want, rtol=1e-10, atol=1e-13)


def test_proxy_gradients_match_autograd_of_closed_forms(backend):
    """Gradients of the fused losses equal autograd through dirichlet_kl (an independent path)."""
    lp = ensemble(4, 5, 9, seed=12)
    s = teacher_stats(lp)
    z = student(4, 9, seed=13)
    z1 = z.clone().requires_grad_(True)
    proxy_rkl_loss(z1, s, 1.0, 1.0, reduction="sum").backward()
    z2 = z.clone().requires_grad_(True)
    big = proxy_precision(s) + 9
    ref = dirichlet_kl(student_alphas(z2, 1.0), s.mean_probs * big[:, None] + 1) / big
    ref.sum().backward()
    # the reference differentiates digamma with torch.polygamma(1, .), itself off by up to 5e-10
    # relative (tests/test_special.py pins the fused trigamma to scipy at 1e-13)
    torch.testing.assert_close(z1.grad, z2.grad, rtol=5e-9, atol=1e-11)
    z3, z4 = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    proxy_fkl_loss(z3, s, 1.0, 1.0, reduction="sum").backward()
    dirichlet_kl(proxy_target(s, 1.0), student_alphas(z4, 1.0)).sum().backward()
    torch.testing.assert_close(z3.grad, z4.grad, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("k", [10, 1000, 40000])
def test_pd_gradient_vanishes_at_target(backend, k):
    lp = ensemble(2, 10, k, seed=14)
    s = teacher_stats(lp)
    big = proxy_precision(s) + k  # target offset 1
    z = torch.log(s.mean_probs * big[:, None]).requires_grad_(True)  # softmax(z) = pi_bar
    loss = proxy_rkl_loss(z, s, 1.0, 1.0, reduction="sum")
    loss.backward()
    assert torch.allclose(torch.softmax(z.detach(), -1), s.mean_probs, rtol=1e-10)
    assert loss.item() < 1e-9
    assert z.grad.abs().max().item() < 1e-9
    # and it points back to the target from a perturbed student
    z2 = (z.detach() + 0.3 * student(2, k, seed=15)).requires_grad_(True)
    assert proxy_rkl_loss(z2, s, 1.0, 1.0).item() > 0


K_VALUES = [2, 3, 10, 1000, 40000]


@given(
    k=st.sampled_from(K_VALUES),
    b=st.integers(1, 3),
    m=st.integers(1, 4),
    member_scale=st.sampled_from([0.0, 1.0, 30.0, 1e4]),
    identical=st.booleans(),
    student_scale=st.sampled_from([0.0, 1.0, 100.0, 1e4]),
    dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, F64]),
    seed=st.integers(0, 2**16),
)
def test_losses_and_gradients_always_finite(
    k, b, m, member_scale, identical, student_scale, dtype, seed
):
    g = torch.Generator().manual_seed(seed)
    members = member_scale * torch.randn(b, 1 if identical else m, k, generator=g)
    members = members.expand(b, m, k) if identical else members
    lp = torch.log_softmax(members.double(), -1).to(dtype)
    zs = (student_scale * torch.randn(b, k, generator=g)).clamp(-1e4, 1e4).to(dtype)
    s = teacher_stats(lp)
    assert torch.isfinite(s.rmi).all() and torch.isfinite(proxy_precision(s)).all()
    if identical:
        assert torch.all(s.rmi < 1e-12) and torch.all(proxy_precision(s) > 1e6)
    for name, fn in LOSSES.items():
        for offset in [0.0, 1.0] if name != "end" else [None]:
            kw = {} if offset is None else {"model_offset": offset}
            z = zs.clone().requires_grad_(True)
            loss = paper(fn)(z, s, **kw)
            loss.backward()
            assert torch.isfinite(loss), (name, kw)
            assert z.grad.dtype == dtype and torch.isfinite(z.grad).all(), (name, kw)


def test_extremes_at_40000_classes_compiled(monkeypatch):
    """The compiled backend under the same extremes (float32 only: one compile per loss)."""
    monkeypatch.setenv("PROXY_END2_LOSS_BACKEND", "compiled")
    g = torch.Generator().manual_seed(19)
    k = 40000
    members = 1e4 * torch.randn(2, 3, k, generator=g)
    members[1] = members[1, :1]  # identical members in row 1
    lp = torch.log_softmax(members, -1)
    z = (1e4 * torch.randn(2, k, generator=g)).requires_grad_(True)
    for fn in LOSSES.values():
        z.grad = None
        loss = paper(fn)(z, lp)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


# ------------------------------------------------------------------ bad input
def test_bad_shapes_name_the_argument():
    lp = ensemble(2, 3, 5)
    with pytest.raises(ValueError, match="student_logits"):
        proxy_rkl_loss(torch.zeros(2, 5, 1), lp, 1.0, 1.0)
    with pytest.raises(ValueError, match="K=4.*K=5"):
        proxy_rkl_loss(torch.zeros(2, 4), lp, 1.0, 1.0)
    with pytest.raises(ValueError, match="B=3.*B=2"):
        end_loss(torch.zeros(3, 5), lp)
    with pytest.raises(ValueError, match="member_log_probs"):
        teacher_stats(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="mean_log_probs"):
        TeacherStats.from_cache(torch.full((2, 5), 0.2), torch.zeros(2, 4), 3)
    with pytest.raises(ValueError, match="reduction"):
        end_loss(torch.zeros(2, 5), lp, reduction="avg")
    with pytest.raises(ValueError, match="temperature"):
        teacher_stats(lp, temperature=0.0)
    with pytest.raises(ValueError, match="smoothing"):
        teacher_stats(lp, smoothing=1.0)
    with pytest.raises(ValueError, match="target_offset"):
        proxy_fkl_loss(torch.zeros(2, 5), lp, model_offset=1.0, target_offset=0.0)


def test_end2_needs_floored_statistics_or_members():
    s = teacher_stats(ensemble(2, 3, 5))
    bare = TeacherStats.from_cache(s.mean_probs, s.mean_log_probs, 3)
    with pytest.raises(ValueError, match="floored_mean_log_probs"):
        end2_loss(torch.zeros(2, 5), bare, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        end2_loss(torch.zeros(2, 5), s, 0.0, temperature=2.0)


def test_backend_env_is_validated(monkeypatch):
    monkeypatch.setenv("PROXY_END2_LOSS_BACKEND", "gpu")
    with pytest.raises(ValueError, match="PROXY_END2_LOSS_BACKEND"):
        Lm.loss_backend(10)
    monkeypatch.setenv("PROXY_END2_LOSS_BACKEND", "auto")
    assert Lm.loss_backend(10) == "eager"
    assert Lm.loss_backend(Lm.COMPILE_MIN_NUMEL) == "compiled"
    assert math.isfinite(Dm.logit_max(40000))


# ----------------------------------------------------------------------------- online statistics


def test_reduced_precision_gradients_keep_nan_and_saturate_overflow():
    """Below float64 the kernels saturate an overflowing gradient (a float64 entry beyond the
    float32 range times a zero weight is 0, not inf * 0 = NaN) but never zero a NaN: a
    divergence must reach the training loop, which stops on it."""
    from pipeline.maths._kernels import _scaled_grad

    grad = torch.tensor([[1e300, 2.0, float("nan")], [1e300, -1e300, 3.0]], dtype=torch.float64)
    out = _scaled_grad(grad, torch.tensor([0.0, 1.0], dtype=torch.float64), torch.float32)
    big = torch.finfo(torch.float32).max
    assert out.dtype == torch.float32 and bool(out[0, 2].isnan())
    assert out[0, :2].tolist() == [0.0, 0.0] and out[1].tolist() == [big, -big, 3.0]


@pytest.mark.parametrize("precision", [1e2, 1e4, 1e7])
def test_forward_kl_gradient_grows_with_the_precision_reverse_kl_does_not(precision):
    """Why PD-FKL fails (docs/image_task.md): for a student mean off by 1e-3 at the target's
    precision, the forward KL's largest logit gradient is ~ precision x 1e-3 (0.1, 10, 1e4 at
    1e2, 1e4, 1e7), the normalised reverse KL's ~1e-3 at any precision."""
    from pipeline.maths.gradients import mismatch_gradient

    fkl = mismatch_gradient("pd_fkl", precision)
    rkl = mismatch_gradient("pd_end2", precision)
    assert fkl == pytest.approx(precision * 1e-3, rel=0.05)
    assert 0.9e-3 < rkl < 2.5e-3
