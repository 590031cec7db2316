"""Per-token outputs of a categorical model, an ensemble or a Dirichlet student (the token and
translation tasks; teacher forcing on the reference or on a decoded hypothesis):
the log-probability of the target, the top-1 prediction and the six uncertainty scores of
:data:`pipeline.maths.uncertainty.SCORES`, computed in float32 terms with float64 sums over the
classes (a float64 pass over ``[T, M, V]`` made the V = 10,000 cache take minutes; pinned to the
float64 measures of :mod:`pipeline.maths.uncertainty` in the tests). Shapes: ``T`` tokens,
``M`` members, ``V`` classes.
"""

from __future__ import annotations

import torch

from pipeline.maths.dirichlet import student_alphas

ROW_BLOCK = 1 << 18
"""Per-token measures work on row blocks of about this many logits (cache-sized)."""
_F64 = torch.float64
CONFIDENT = (0.5, 0.9)
"""Top-probability levels of the confidence tables: the share of tokens whose top class holds
more than each (how confident members and ensemble are, the paper's regime). Label smoothing
0.1 caps a translation member's top probability near 0.9, so the 0.5 share says more of a
smoothed member."""


def _entropy(p: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """``-sum p ln p`` per row, float32 terms summed in float64."""
    return -(p * logp).sum(-1, dtype=_F64)


def _outputs(probs, logp, y, scores) -> dict[str, torch.Tensor]:
    out = {k: v.float() for k, v in scores.items()}
    out["logp_y"] = logp.gather(1, y[:, None])[:, 0].float()
    out["pred"] = probs.argmax(1).to(torch.int32)
    return out


def _cat(parts: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def categorical_tokens(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-token outputs of one categorical model (a member, EnD): TU = DU = H[p], no knowledge
    uncertainty (MI = EPKL = RMI = 0), as
    :func:`pipeline.maths.uncertainty.categorical_uncertainty`."""
    parts = []
    rows = max(1, ROW_BLOCK // logits.shape[1])
    for r in range(0, logits.shape[0], rows):
        logp = torch.log_softmax(logits[r : r + rows].float(), -1)
        p = logp.exp()
        h = _entropy(p, logp)
        zero = torch.zeros_like(h)
        scores = {"total": h, "data": h, "knowledge": zero, "epkl": zero, "rmi": zero}
        scores["neg_confidence"] = -p.amax(-1).double()
        parts.append(_outputs(p, logp, y[r : r + rows], scores))
    return _cat(parts)


def ensemble_tokens(member_logits: list[torch.Tensor], y: torch.Tensor) -> dict:
    """Per-token outputs of the ensemble of ``member_logits`` (``M`` tensors ``[T, V]``) with the
    measures of :func:`pipeline.maths.uncertainty.ensemble_uncertainty`, computed in float32
    terms with float64 sums over classes; MI and RMI in their KL forms, EPKL = MI + RMI."""
    m, (t, k) = len(member_logits), member_logits[0].shape
    rows = max(1, ROW_BLOCK // k)
    parts = []
    for r in range(0, t, rows):
        logps = [torch.log_softmax(z[r : r + rows].float(), -1) for z in member_logits]
        ps = [lp.exp() for lp in logps]
        pbar = torch.stack(ps).mean(0)
        log_pbar = torch.log(pbar)
        lbar = torch.stack(logps).mean(0)
        data = sum(_entropy(p, lp) for p, lp in zip(ps, logps, strict=True)) / m
        mi = sum((p * (lp - log_pbar)).sum(-1, dtype=_F64) for p, lp in zip(ps, logps, strict=True))
        mi = mi / m
        rmi = (pbar * (log_pbar - lbar)).sum(-1, dtype=_F64)
        scores = {
            "total": _entropy(pbar, log_pbar),
            "data": data,
            "knowledge": mi,
            "epkl": mi + rmi,
            "rmi": rmi,
            "neg_confidence": -pbar.amax(-1).double(),
        }
        parts.append(_outputs(pbar, log_pbar, y[r : r + rows], scores))
    return _cat(parts)


def dirichlet_tokens(logits: torch.Tensor, m_off: float, y: torch.Tensor) -> dict:
    """Per-token outputs of a Dirichlet student, ``alpha = exp(z) + m_off``: point prediction
    ``softmax(z)``, measures of :func:`pipeline.maths.uncertainty.dirichlet_uncertainty` (float32
    digamma terms, float64 sums; alpha0 and EPKL = (K - 1) / alpha0 in float64)."""
    t, k = logits.shape
    rows = max(1, ROW_BLOCK // k)
    parts = []
    for r in range(0, t, rows):
        z = logits[r : r + rows].float()
        logp_point = torch.log_softmax(z, -1)
        p_point = logp_point.exp()
        alpha64 = student_alphas(logits[r : r + rows], m_off)
        a0 = alpha64.sum(-1)
        alpha = alpha64.float()
        p = (alpha64 / a0[:, None]).float()
        logp = torch.log(p)
        total = _entropy(p, logp)
        data = -(p * torch.digamma(alpha + 1.0)).sum(-1, dtype=_F64) + torch.digamma(a0 + 1.0)
        rmi = (p * (logp - torch.digamma(alpha))).sum(-1, dtype=_F64) + torch.digamma(a0)
        scores = {
            "total": total,
            "data": data,
            "knowledge": total - data,
            "epkl": (k - 1) / a0,
            "rmi": rmi,
            "neg_confidence": -p_point.amax(-1).double(),
        }
        parts.append(_outputs(p_point, logp_point, y[r : r + rows], scores))
    return _cat(parts)


def tail_log_mean(member_logits: list[torch.Tensor]) -> torch.Tensor:
    """``[T]`` float64 per token: the mean of ``ln pi_bar_c`` over the ``V - 1`` classes below
    the ensemble's top one, ``pi_bar`` the mean of the ``M`` members' softmaxes (``[T, V]``
    logits each), in float64 (a float32 ``pi_bar`` underflows to 0 in the far tail). How small
    the ensemble's tail is: the paper's many-class regime is confident members whose tail
    classes sit far below the head. ``ln pi_bar`` is clamped at ``ln 1e-300``."""
    m, (t, k) = len(member_logits), member_logits[0].shape
    if k < 2:
        raise ValueError(f"the tail needs at least 2 classes, got V={k}")
    rows = max(1, ROW_BLOCK // k)
    parts = []
    for r in range(0, t, rows):
        pbar = sum(torch.softmax(z[r : r + rows].double(), -1) for z in member_logits) / m
        logp = torch.log(pbar.clamp_min(1e-300))
        parts.append((logp.sum(-1) - logp.max(-1).values) / (k - 1))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=_F64)
