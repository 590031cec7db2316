"""Why EnD2 fails at many classes: where the gradient mass of each loss goes (docs/method.md).

For synthetic 10-member ensembles with a Zipf-like class profile, a student that is close to the
ensemble except that its two top classes are swapped and its tail is mis-scaled, measure the
share of ``sum_c |dL/dz_c|`` that falls on the head classes (``pi_bar_c >= 1e-3``) for EnD2
and PD-EnD2, and the per-class gradient magnitude against the rank of ``pi_bar_c``.

The losses are the registered methods (:mod:`pipeline.methods`) at their default options.

Run by hand: ``python -m pipeline.stages.gradient_analysis --out results/gradient_analysis``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import methods
from pipeline.io import atomic_write_text
from pipeline.maths.gradients import HEAD_THRESHOLD, head_share
from pipeline.maths.stats import TeacherStats, teacher_stats

KS = (10, 100, 1000, 10000, 40000)
"""Class counts of the head-share table (``gradient_analysis.ks``)."""
BATCH = 8
"""Synthetic examples per class count (``gradient_analysis.batch``)."""
PROFILE_K = 10000
"""Class count of the per-rank profile (``gradient_analysis.profile_k``)."""
METHODS = ("end", "end2", "pd_end2")
"""The methods compared (registry names), each at its default options."""


def synthetic_ensemble(batch: int, k: int, members: int = 10, seed: int = 0) -> torch.Tensor:
    """``[B, M, K]`` member log-probs: Zipf profile (exponent 1.1) in random class order,
    plus N(0, 0.5) member noise on the logits."""
    g = torch.Generator().manual_seed(seed)
    profile = -1.1 * torch.log1p(torch.arange(k, dtype=torch.float64))
    order = torch.argsort(torch.rand(batch, k, generator=g), dim=-1)
    base = profile[order]
    noise = 0.5 * torch.randn(batch, members, k, generator=g, dtype=torch.float64)
    return torch.log_softmax(base[:, None, :] + noise, dim=-1)


def perturbed_student(stats: TeacherStats, precision: float = 100.0) -> torch.Tensor:
    """Logits ``ln(pi_bar * precision)`` with the top two classes swapped and the tail
    (``pi_bar < HEAD_THRESHOLD``) spread 25% too wide in log space."""
    logp = torch.log(stats.mean_probs)
    tail = stats.mean_probs < HEAD_THRESHOLD
    floor = np.log(HEAD_THRESHOLD)
    logp = torch.where(tail, floor + 1.25 * (logp - floor), logp)
    top2 = logp.topk(2, dim=-1).indices
    rows = torch.arange(logp.shape[0])
    first, second = logp[rows, top2[:, 0]].clone(), logp[rows, top2[:, 1]].clone()
    logp[rows, top2[:, 0]], logp[rows, top2[:, 1]] = second, first
    return logp + np.log(precision)


def gradient_magnitudes(method: str, logits: torch.Tensor, stats: TeacherStats) -> torch.Tensor:
    """``|dL/dz|`` ``[B, K]`` of the summed loss of ``method`` (a registered method)."""
    z = logits.clone().requires_grad_(True)
    methods.loss(method, {}, z, stats, reduction="sum").backward()
    return z.grad.abs()


def run(ks=KS, batch: int = BATCH, seed: int = 0) -> pd.DataFrame:
    """Head share per (K, method, example): a tidy table."""
    rows = []
    for k in ks:
        stats = teacher_stats(synthetic_ensemble(batch, k, seed=seed))
        z = perturbed_student(stats)
        for method in METHODS:
            share = head_share(gradient_magnitudes(method, z, stats), stats.mean_probs)
            rows += [
                {"num_classes": k, "method": method, "example": i, "head_share": float(v)}
                for i, v in enumerate(share)
            ]
    return pd.DataFrame(rows)


def rank_profile(k: int = PROFILE_K, seed: int = 0) -> pd.DataFrame:
    """Mean ``|dL/dz_c|`` against the rank of ``pi_bar_c`` (1 = largest), per method."""
    stats = teacher_stats(synthetic_ensemble(4, k, seed=seed))
    z = perturbed_student(stats)
    order = torch.argsort(stats.mean_probs, dim=-1, descending=True)
    out = {"rank": np.arange(1, k + 1), "mean_prob": stats.mean_probs.gather(1, order).mean(0)}
    for method in METHODS:
        g = gradient_magnitudes(method, z, stats).gather(1, order)
        out[method] = g.mean(0).numpy()
    return pd.DataFrame(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="directory for the two CSV tables")
    ap.add_argument("--ks", type=int, nargs="+", default=list(KS))
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--profile-k", type=int, default=PROFILE_K)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    table = run(args.ks, args.batch, args.seed)
    profile = rank_profile(args.profile_k, seed=args.seed)
    atomic_write_text(table.to_csv(index=False), args.out / "head_share.csv")
    atomic_write_text(profile.to_csv(index=False), args.out / "rank_profile.csv")
    print(table.groupby(["num_classes", "method"])["head_share"].agg(["mean", "std"]).unstack())


if __name__ == "__main__":
    main()
