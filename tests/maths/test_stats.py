"""pipeline.maths.stats: teacher statistics (float64 and online) and the proxy target."""

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from pipeline.maths import losses as Lm
from pipeline.maths import stats as Sm
from pipeline.maths.dirichlet import EPS
from pipeline.maths.losses import end2_loss, end_loss, proxy_fkl_loss, proxy_rkl_loss
from pipeline.maths.stats import TeacherStats, proxy_precision, proxy_target, teacher_stats
from tests.maths.synthetic import F64, ensemble, paper, student


def test_teacher_stats_definitions():
    lp = ensemble(4, 5, 7)
    s = teacher_stats(lp)
    probs = lp.exp()
    pbar = probs.mean(1)
    lbar = lp.mean(1)
    assert torch.allclose(s.mean_probs, pbar, rtol=1e-14)
    assert torch.allclose(s.mean_log_probs, lbar, rtol=1e-14)
    rmi = (pbar * (pbar.log() - lbar)).sum(-1)
    assert torch.allclose(s.rmi, rmi, rtol=1e-12)
    # RMI = mean_m KL[pi_bar || pi_m]
    kl = torch.stack([kl_divergence(Categorical(pbar), Categorical(probs[:, m])) for m in range(5)])
    assert torch.allclose(s.rmi, kl.mean(0), rtol=1e-10)
    assert torch.allclose(s.floored_mean_log_probs, torch.log(probs + EPS).mean(1), rtol=1e-14)
    assert s.num_members == 5 and s.num_classes == 7 and s.batch_size == 4


def test_teacher_stats_retempering_and_smoothing():
    g = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(2, 4, 6, generator=g, dtype=F64)
    s = teacher_stats(torch.log_softmax(logits, -1), temperature=2.5, smoothing=1e-3)
    p = torch.softmax(logits / 2.5, -1) * (1 - 1e-3) + 1e-3 / 6
    assert torch.allclose(s.mean_probs, p.mean(1), rtol=1e-13)
    assert torch.allclose(s.mean_log_probs, p.log().mean(1), rtol=1e-13)
    assert s.temperature == 2.5 and s.smoothing == 1e-3


def test_from_cache_reproduces_stats_from_members():
    lp = ensemble(6, 4, 9)
    full = teacher_stats(lp)
    cached = TeacherStats.from_cache(
        full.mean_probs.float(),
        full.mean_log_probs.float(),
        4,
        floored_mean_log_probs=full.floored_mean_log_probs,
    )
    assert torch.allclose(cached.rmi, full.rmi, atol=1e-6)
    z = student(6, 9)
    for fn in map(paper, (end_loss, end2_loss, proxy_rkl_loss, proxy_fkl_loss)):
        assert torch.allclose(
            fn(z, cached, reduction="none"), fn(z, full, reduction="none"), rtol=1e-5, atol=1e-6
        )
    # the half-precision cache renormalises pi_bar
    assert torch.allclose(cached.mean_probs.sum(-1), torch.ones(6, dtype=F64), rtol=1e-15)


def test_proxy_target_and_precision():
    lp = ensemble(3, 5, 8)
    s = teacher_stats(lp)
    b0 = proxy_precision(s)
    assert torch.allclose(b0, 7 / (2 * s.rmi + EPS))
    beta = proxy_target(s, 0.5)
    assert torch.allclose(beta, s.mean_probs * b0[:, None] + 0.5)
    same = teacher_stats(lp[:, :1].expand(3, 5, 8).contiguous())
    assert torch.all(same.rmi < 1e-14)  # exactly 0 up to the rounding of a mean of equal values
    torch.testing.assert_close(
        proxy_precision(same), torch.full((3,), 7 / EPS, dtype=F64), rtol=1e-6, atol=0
    )


# ------------------------------------------------------------------ losses = definitions


@pytest.mark.parametrize("k", [7, 1000, 20000])
@pytest.mark.parametrize(("temperature", "smoothing"), [(1.0, 0.0), (2.5, 0.0), (1.0, 1e-3)])
def test_online_stats_match_float64_stats(backend, k, temperature, smoothing):
    g = torch.Generator().manual_seed(k)
    z = torch.randn(37, 3, k, generator=g) * 4.0  # 37 rows: several row blocks at large K
    ref = Sm.teacher_stats(z.double(), temperature=temperature, smoothing=smoothing)
    fast = Sm.online_teacher_stats(list(z.unbind(1)), temperature, smoothing)
    f32 = torch.float32
    assert (fast.mean_probs.dtype, fast.mean_log_probs.dtype, fast.rmi.dtype) == (f32, f32, F64)
    # float32 log-softmax over K classes: its normaliser carries a sum of K float32 terms, so the
    # error grows with K and with the vector unit (2.4e-6 at K = 20,000 with AVX2's exp)
    wide = Sm.TeacherStats(
        fast.mean_probs.double(), fast.mean_log_probs.double(), fast.rmi, 3,
        fast.floored_mean_log_probs.double(), temperature, smoothing,
    )  # fmt: skip
    torch.testing.assert_close(wide.mean_probs, ref.mean_probs, rtol=5e-6, atol=1e-9)
    torch.testing.assert_close(wide.mean_log_probs, ref.mean_log_probs, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(
        wide.floored_mean_log_probs, ref.floored_mean_log_probs, rtol=1e-6, atol=1e-5
    )
    torch.testing.assert_close(fast.rmi, ref.rmi, rtol=1e-4, atol=5e-6)
    assert torch.allclose(wide.mean_probs.sum(-1), torch.ones(37, dtype=F64), atol=1e-6)
    # the losses the students see differ by < 1e-4 relative
    s = torch.randn(37, k, generator=g, dtype=torch.float64) * 2
    for loss in (
        lambda st: Lm.end_loss(s, st, reduction="none"),
        lambda st: Lm.end2_loss(s, st, 0.0, reduction="none"),
        lambda st: Lm.proxy_rkl_loss(s, st, 1.0, 1.0, reduction="none"),
    ):
        a, b = loss(fast), loss(ref)
        assert ((a - b).abs() <= 1e-4 * b.abs().clamp_min(1.0)).all()


def test_online_stats_agreeing_members_stay_finite(backend):
    z = torch.randn(4, 1, 5000).expand(4, 3, 5000)  # identical members: RMI ~ 0
    s = Sm.online_teacher_stats(z, need_floored=False)
    assert s.floored_mean_log_probs is None
    assert (s.rmi >= 0).all() and (s.rmi < 1e-5).all()
    loss = Lm.proxy_rkl_loss(torch.randn(4, 5000, requires_grad=True), s, 1.0, 1.0)
    loss.backward()
    assert torch.isfinite(loss)


def test_online_stats_reject_bad_input():
    with pytest.raises(ValueError, match="B, M, K"):
        Sm.online_teacher_stats(torch.randn(3, 4))
    with pytest.raises(ValueError, match="same"):
        Sm.online_teacher_stats([torch.randn(3, 4), torch.randn(3, 5)])
    with pytest.raises(ValueError, match="smoothing"):
        Sm.online_teacher_stats([torch.randn(3, 4)], smoothing=1.0)
