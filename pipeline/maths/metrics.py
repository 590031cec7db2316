"""Evaluation metrics (docs/method.md, "Metrics"). Inputs: numpy arrays or torch tensors; outputs:
Python floats (or numpy arrays for curves).

Shapes: ``probs [N, K]`` (rows sum to 1), ``y [N]`` integer labels, scores/uncertainties ``[N]``
(higher = more uncertain), ``errors [N]`` booleans (1 = misclassified).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = [
    "accuracy",
    "brier",
    "calibration_error",
    "confidence_bins",
    "ece",
    "nll",
    "ood_aupr",
    "ood_auroc",
    "prr",
    "rejection_curve",
    "rejection_ratio",
    "reliability_bins",
]

_TINY = np.finfo(np.float64).tiny


ECE_BINS = 10
"""Equal-width confidence bins of ECE and the reliability diagrams, unless configured."""


def _arr(x, name: str, ndim: int) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return a


def _probs_labels(probs, y) -> tuple[np.ndarray, np.ndarray]:
    p = _arr(probs, "probs", 2).astype(np.float64)
    t = _arr(y, "y", 1).astype(np.int64)
    if p.shape[0] != t.shape[0]:
        raise ValueError(f"probs has {p.shape[0]} rows but y has {t.shape[0]} labels")
    if t.min() < 0 or t.max() >= p.shape[1]:
        raise ValueError(f"labels must be in [0, {p.shape[1]}), got [{t.min()}, {t.max()}]")
    return p, t


def accuracy(probs, y, k: int = 1) -> float:
    """Top-``k`` accuracy."""
    p, t = _probs_labels(probs, y)
    if not 1 <= k <= p.shape[1]:
        raise ValueError(f"k must be in [1, {p.shape[1]}], got {k}")
    if k == 1:
        return float(np.mean(p.argmax(1) == t))
    topk = np.argpartition(-p, k - 1, axis=1)[:, :k]
    return float(np.mean((topk == t[:, None]).any(1)))


def nll(probs, y) -> float:
    """Mean negative log-likelihood ``-ln p_y`` (``p_y`` floored at the smallest float64)."""
    p, t = _probs_labels(probs, y)
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(t)), t], _TINY))))


def brier(probs, y) -> float:
    """Mean Brier score ``sum_c (p_c - 1[c = y])^2``."""
    p, t = _probs_labels(probs, y)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(t)), t] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def reliability_bins(probs, y, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Equal-width confidence bins ``(lo, hi]`` over [0, 1]: per-bin count, mean confidence and
    accuracy (NaN for empty bins). The first bin also holds confidence 0."""
    p, t = _probs_labels(probs, y)
    return confidence_bins(p.max(1), p.argmax(1) == t, bins)


def confidence_bins(confidence, correct, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """:func:`reliability_bins` from each example's ``confidence [N]`` (the top probability)
    and whether its prediction is ``correct [N]`` (bool)."""
    conf = _arr(confidence, "confidence", 1).astype(np.float64)
    correct = _arr(correct, "correct", 1).astype(np.float64)
    if conf.shape != correct.shape:
        raise ValueError(f"confidence has {conf.shape[0]} entries but correct {correct.shape[0]}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=bins) / count
        acc = np.bincount(idx, weights=correct, minlength=bins) / count
    return {
        "count": count,
        "confidence": mean_conf,
        "accuracy": acc,
        "edges": np.linspace(0.0, 1.0, bins + 1),
    }


def ece(probs, y, bins: int = ECE_BINS) -> float:
    """Expected calibration error ``sum_b (n_b / N) |conf_b - acc_b|`` over equal-width bins."""
    p, t = _probs_labels(probs, y)
    return calibration_error(p.max(1), p.argmax(1) == t, bins)


def calibration_error(confidence, correct, bins: int = ECE_BINS) -> float:
    """:func:`ece` from each example's ``confidence [N]`` and ``correct [N]``."""
    r = confidence_bins(confidence, correct, bins)
    filled = r["count"] > 0
    gap = np.abs(r["confidence"][filled] - r["accuracy"][filled])
    return float(np.sum(r["count"][filled] * gap) / r["count"].sum())


def _ood_labels(score_in, score_out) -> tuple[np.ndarray, np.ndarray]:
    s_in = _arr(score_in, "score_in", 1).astype(np.float64)
    s_out = _arr(score_out, "score_out", 1).astype(np.float64)
    scores = np.concatenate([s_in, s_out])
    if not np.all(np.isfinite(scores)):
        raise ValueError("OOD scores contain NaN or inf")
    labels = np.concatenate([np.zeros(len(s_in)), np.ones(len(s_out))])
    return labels, scores


def ood_auroc(score_in, score_out) -> float:
    """ROC-AUC of detecting OOD (positive class) by the score (higher = more likely OOD)."""
    return float(roc_auc_score(*_ood_labels(score_in, score_out)))


def ood_aupr(score_in, score_out) -> float:
    """PR-AUC (average precision) with OOD as the positive class."""
    return float(average_precision_score(*_ood_labels(score_in, score_out)))


def rejection_curve(uncertainty, errors) -> tuple[np.ndarray, np.ndarray]:
    """Error rate of the whole set after sending the most uncertain fraction to an oracle.

    Returns ``fractions [N + 1] = n / N`` and ``error_rates [N + 1]`` (errors left among the
    kept examples, divided by N). Ties in ``uncertainty`` are rejected at their group's mean
    error rate (the expectation under random tie-breaking), so a constant uncertainty gives
    exactly the random curve.
    """
    u = _arr(uncertainty, "uncertainty", 1).astype(np.float64)
    e = _arr(errors, "errors", 1).astype(np.float64)
    if u.shape != e.shape:
        raise ValueError(f"uncertainty has {u.shape[0]} entries but errors has {e.shape[0]}")
    if not np.all(np.isfinite(u)):
        raise ValueError("uncertainty contains NaN or inf")
    n = len(u)
    order = np.argsort(-u, kind="stable")
    us, es = u[order], e[order]
    rejected = np.concatenate([[0.0], np.cumsum(es)])
    edges = np.concatenate([[0], np.flatnonzero(np.diff(us) != 0) + 1, [n]])
    steps = np.arange(n + 1)
    rejected = np.interp(steps, edges, rejected[edges])
    return steps / n, (rejected[-1] - rejected) / n


def pairwise_disagreement(member_preds) -> float:
    """Mean over member pairs ``m < m'`` of the fraction of examples on which their top
    classes differ; ``member_preds [N, M]`` integer class indices, ``M >= 2``. From the class
    counts per example: pairs that agree = sum_c n_c (n_c - 1) / 2."""
    p = _arr(member_preds, "member_preds", 2).astype(np.int64)
    n, m = p.shape
    if m < 2:
        raise ValueError(f"pairwise disagreement needs at least 2 members, got {m}")
    counts = np.zeros((n, int(p.max(initial=0)) + 1), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), m), p.ravel()), 1)
    agree = (counts * (counts - 1) // 2).sum(1)
    pairs = m * (m - 1) // 2
    return float(np.mean(1.0 - agree / pairs))


def prr(uncertainty, errors) -> float:
    """Prediction rejection ratio ``(A_random - A_unc) / (A_random - A_oracle)``.

    Areas under the rejection curves on [0, 1]; 1 for a perfect ranking, ~0 for a random one.
    NaN when there are no errors or only errors (the ratio is undefined).
    """
    fractions, curve = rejection_curve(uncertainty, errors)
    e0 = curve[0]
    if e0 == 0.0 or e0 == 1.0:
        return float("nan")
    a_unc = float(np.trapezoid(curve, fractions))
    a_random = e0 / 2.0
    a_oracle = e0 * e0 / 2.0
    return (a_random - a_unc) / (a_random - a_oracle)


def rejection_ratio(uncertainty, loss) -> float:
    """Prediction rejection ratio for a graded loss (``loss [N]`` >= 0, e.g. ``1 - chrF/100``
    of each sentence): ``(A_random - A_unc) / (A_random - A_oracle)``, the oracle rejecting by
    the loss itself (for 0/1 errors this is :func:`prr`'s oracle). NaN when every loss is
    equal (the ratio is undefined)."""
    loss = _arr(loss, "loss", 1).astype(np.float64)
    fractions, curve = rejection_curve(uncertainty, loss)
    _, oracle = rejection_curve(loss, loss)
    a_random = curve[0] / 2.0
    a_oracle = float(np.trapezoid(oracle, fractions))
    if a_random - a_oracle <= 0.0:
        return float("nan")
    return (a_random - float(np.trapezoid(curve, fractions))) / (a_random - a_oracle)
