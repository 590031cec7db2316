import numpy as np
import pytest
import scipy.special as sp
import torch

from pipeline.maths import special

GRID = np.concatenate(
    [
        np.logspace(-130, 0, 1500),
        np.linspace(0.5, 40.0, 4000),
        1.0 + np.logspace(-12, 0, 1000),
        np.logspace(1, 200, 1500),
    ]
)


def _rel(got, want):
    return np.max(np.abs(got - want) / np.maximum(np.abs(want), 1.0))


def test_gamma_family_matches_scipy():
    x = torch.from_numpy(GRID)
    lg, dg, tg = (t.numpy() for t in special.gamma_family(x))
    assert _rel(lg, sp.gammaln(GRID)) < 1e-14
    assert _rel(dg, sp.digamma(GRID)) < 1e-14
    trig = sp.polygamma(1, GRID)
    assert np.max(np.abs(tg - trig) / trig) < 1e-13


def test_lgamma_matches_gamma_family_and_scipy():
    x = torch.from_numpy(GRID)
    assert _rel(special.lgamma(x).numpy(), sp.gammaln(GRID)) < 1e-14
    full = special.gamma_family(x)[0]
    torch.testing.assert_close(
        special.lgamma(x) / full.abs().clamp_min(1),
        full / full.abs().clamp_min(1),
        rtol=0,
        atol=2e-14,
    )


@pytest.mark.parametrize("x", [1.0, 2.0, 10.0])
def test_exact_points(x):
    lg, dg, tg = special.gamma_family(torch.tensor([x], dtype=torch.float64))
    assert lg.item() == pytest.approx(float(sp.gammaln(x)), abs=1e-14)
    assert dg.item() == pytest.approx(float(sp.digamma(x)), abs=1e-14)
    assert tg.item() == pytest.approx(float(sp.polygamma(1, x)), rel=1e-14)
