import numpy as np
import pytest
import torch

from pipeline.maths import metrics as M


def test_pairwise_disagreement_against_every_pair():
    from itertools import combinations

    rng = np.random.default_rng(0)
    preds = rng.integers(0, 4, size=(200, 5))
    pairs = [np.mean(preds[:, i] != preds[:, j]) for i, j in combinations(range(5), 2)]
    assert M.pairwise_disagreement(preds) == pytest.approx(np.mean(pairs), abs=1e-12)
    assert M.pairwise_disagreement(np.tile(preds[:, :1], (1, 3))) == 0.0
    assert M.pairwise_disagreement(np.array([[0, 1], [2, 3]])) == 1.0
    with pytest.raises(ValueError, match="at least 2 members"):
        M.pairwise_disagreement(preds[:, :1])


def test_point_metrics_closed_forms():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    y = np.array([0, 1, 1])
    assert M.accuracy(p, y) == pytest.approx(1 / 3)
    assert M.accuracy(p, y, k=2) == pytest.approx(1.0)
    assert M.nll(p, y) == pytest.approx(-np.mean(np.log([0.7, 0.3, 0.4])))
    brier = np.mean([(0.3**2 + 0.04 + 0.01), (0.01 + 0.49 + 0.36), (0.25 + 0.36 + 0.01)])
    assert M.brier(p, y) == pytest.approx(brier)
    # bins of width 0.5: {0.5} -> bin 0, {0.7, 0.6} -> bin 1
    assert M.ece(p, y, bins=2) == pytest.approx((1 / 3) * 0.5 + (2 / 3) * abs(0.65 - 0.5))
    assert M.accuracy(torch.tensor(p), torch.tensor(y)) == pytest.approx(1 / 3)


def test_ece_of_calibrated_sample_is_small():
    rng = np.random.default_rng(0)
    n, k = 200_000, 4
    p = rng.dirichlet(np.ones(k), size=n)
    y = np.array([rng.choice(k, p=row) for row in p[:20000]])
    assert M.ece(p[:20000], y) < 0.02
    # an overconfident predictor is not
    sharp = p[:20000] ** 3
    sharp /= sharp.sum(1, keepdims=True)
    assert M.ece(sharp, y) > 0.05


def test_auroc_and_aupr_against_mann_whitney():
    rng = np.random.default_rng(1)
    s_in, s_out = rng.normal(0, 1, 300), rng.normal(1, 1, 200)
    wins = (s_out[:, None] > s_in[None, :]).mean() + 0.5 * (s_out[:, None] == s_in[None, :]).mean()
    assert M.ood_auroc(s_in, s_out) == pytest.approx(wins, rel=1e-12)
    assert M.ood_auroc(s_in, s_in + 100) == 1.0
    assert M.ood_aupr(s_in, s_in + 100) == pytest.approx(1.0)
    assert 0.4 < M.ood_aupr(s_in, s_out) < 1.0
    with pytest.raises(ValueError, match="NaN"):
        M.ood_auroc(np.array([np.nan]), s_out)


def test_prr_oracle_random_and_constant():
    rng = np.random.default_rng(2)
    errors = rng.random(5000) < 0.2
    assert M.prr(errors.astype(float) + rng.random(5000) * 0.1, errors) == pytest.approx(1.0)
    random_prrs = [M.prr(rng.random(5000), errors) for _ in range(20)]
    assert abs(np.mean(random_prrs)) < 0.03
    assert M.prr(np.zeros(5000), errors) == pytest.approx(0.0, abs=1e-12)  # ties = random
    assert M.prr(-errors.astype(float), errors) == pytest.approx(-1.0)  # worst ranking
    assert np.isnan(M.prr(rng.random(10), np.zeros(10)))


def test_rejection_curve_shape_and_values():
    u = np.array([0.9, 0.1, 0.5, 0.7])
    err = np.array([1, 0, 1, 0])
    f, e = M.rejection_curve(u, err)
    np.testing.assert_allclose(f, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(e, [0.5, 0.25, 0.25, 0.0, 0.0])
    with pytest.raises(ValueError, match="errors"):
        M.rejection_curve(u, err[:3])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="probs"):
        M.nll(np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        M.accuracy(np.ones((2, 3)) / 3, np.array([0, 5]))
    with pytest.raises(ValueError, match="rows"):
        M.brier(np.ones((2, 3)) / 3, np.array([0]))
