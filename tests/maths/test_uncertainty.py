import math

import pytest
import torch
from torch.distributions import Categorical, Dirichlet, kl_divergence

from pipeline.maths.uncertainty import MEASURES, dirichlet_uncertainty, ensemble_uncertainty, scores

F64 = torch.float64


def test_disagreeing_members_have_knowledge_ln2():
    p = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=F64)
    u = ensemble_uncertainty(p)
    assert set(u) == set(MEASURES)
    assert u["knowledge"].item() == pytest.approx(math.log(2), rel=1e-12)
    assert u["total"].item() == pytest.approx(math.log(2), rel=1e-12)
    assert u["data"].item() == pytest.approx(0.0, abs=1e-12)
    assert u["confidence"].item() == 0.5
    assert torch.isfinite(u["epkl"]).all() and u["epkl"].item() > 100  # KL is infinite: floored


def test_identical_members_have_no_knowledge_uncertainty():
    p = torch.softmax(torch.randn(4, 1, 6, dtype=F64), -1).expand(4, 5, 6)
    u = ensemble_uncertainty(p)
    for key in ("knowledge", "epkl", "rmi"):
        assert torch.allclose(u[key], torch.zeros(4, dtype=F64), atol=1e-14)
    torch.testing.assert_close(u["total"], Categorical(p[:, 0]).entropy())


def test_ensemble_measures_against_pairwise_definitions():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(2 * torch.randn(3, 4, 5, generator=g, dtype=F64), -1)
    u = ensemble_uncertainty(p)
    cats = [Categorical(p[:, m]) for m in range(4)]
    epkl = sum(kl_divergence(a, b) for a in cats for b in cats) / 16
    mi = sum(kl_divergence(a, Categorical(p.mean(1))) for a in cats) / 4
    rmi = sum(kl_divergence(Categorical(p.mean(1)), a) for a in cats) / 4
    torch.testing.assert_close(u["epkl"], epkl)
    torch.testing.assert_close(u["knowledge"], mi)
    torch.testing.assert_close(u["rmi"], rmi)
    torch.testing.assert_close(u["total"], u["data"] + u["knowledge"])
    torch.testing.assert_close(u["epkl"], u["knowledge"] + u["rmi"])


def test_dirichlet_measures():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(5, 7, generator=g, dtype=F64) * 4 + 0.2
    u = dirichlet_uncertainty(a)
    a0 = a.sum(-1)
    torch.testing.assert_close(u["epkl"], 6 / a0)
    torch.testing.assert_close(u["total"], u["data"] + u["knowledge"])
    torch.testing.assert_close(u["epkl"], u["knowledge"] + u["rmi"])
    assert torch.all(u["knowledge"] > 0) and torch.all(u["rmi"] > 0)
    torch.testing.assert_close(u["confidence"], (a / a0[:, None]).amax(-1))


def test_dirichlet_measures_match_monte_carlo():
    torch.manual_seed(2)
    a = torch.tensor([[2.0, 1.0, 0.5, 3.0]], dtype=F64)
    u = dirichlet_uncertainty(a)
    n = 200_000
    s1 = Dirichlet(a[0]).sample((n,)).clamp_min(1e-300)
    s2 = Dirichlet(a[0]).sample((n,)).clamp_min(1e-300)
    epkl_mc = (s1 * (s1.log() - s2.log())).sum(-1).mean()
    du_mc = (-(s1 * s1.log()).sum(-1)).mean()
    mi_mc = (s1 * (s1.log() - (a / a.sum()).log())).sum(-1).mean()
    assert u["epkl"].item() == pytest.approx(epkl_mc.item(), rel=0.02)
    assert u["data"].item() == pytest.approx(du_mc.item(), rel=0.01)
    assert u["knowledge"].item() == pytest.approx(mi_mc.item(), rel=0.03)


def test_scores_negate_confidence_and_bad_shapes():
    u = ensemble_uncertainty(torch.softmax(torch.randn(2, 3, 4), -1))
    s = scores(u)
    assert "confidence" not in s and torch.equal(s["neg_confidence"], -u["confidence"])
    with pytest.raises(ValueError, match="member_probs"):
        ensemble_uncertainty(torch.rand(2, 4))
    with pytest.raises(ValueError, match="alphas"):
        dirichlet_uncertainty(torch.rand(2, 3, 4))
