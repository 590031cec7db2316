"""Teacher-cache size and loss accuracy: naive float32 ``[N, M, K]`` vs the statistics store.

Run: ``python benchmarks/bench_cache.py``. For a synthetic ensemble
(``pipeline.stages.gradient_analysis.synthetic_ensemble``), compares bytes per example and the
per-example relative error of every loss computed from each store against the exact float64
statistics of the members:

* naive   member log-probs ``[N, M, K]`` float32 (what a cache without statistics keeps);
* stats16 ``pi_bar`` and the gaps of ``l_bar``, ``mean ln(pi + eps)`` to ``ln(pi_bar + eps)``,
  ``[N, K]`` float16, + exact RMI ``[N]`` (the pipeline's default ``teacher.dtype: float16``);
* stats32 the same in float32.

Error metric: ``|L_store - L_exact| / max(|L_exact|, 1)`` per example (relative above 1 nat,
absolute below: EnD2's NLL crosses zero). The accepted tolerance for the float16 store
(tests/test_teacher.py) is 5e-3 on every loss.
This measures and prints; it asserts nothing.
"""

from __future__ import annotations

import argparse

import torch

from pipeline.maths.losses import end2_loss, end_loss, proxy_fkl_loss, proxy_rkl_loss
from pipeline.maths.stats import TeacherStats, teacher_stats
from pipeline.stages.gradient_analysis import synthetic_ensemble
from pipeline.tasks.image.cache import encode_stats, stats_from_cache

LOSSES = {"end": end_loss, "end2": end2_loss, "pd_end2": proxy_rkl_loss, "pd_fkl": proxy_fkl_loss}


def store(stats: TeacherStats, dtype: torch.dtype) -> TeacherStats:
    """Round-trip through the pipeline's cache encoding
    (``pipeline.tasks.image.cache.encode_stats``)."""
    enc = encode_stats(
        stats.mean_probs, stats.mean_log_probs, stats.floored_mean_log_probs, stats.rmi, dtype
    )
    return stats_from_cache(enc, stats.num_members)


def loss_errors(exact: TeacherStats, approx: TeacherStats, z: torch.Tensor) -> dict[str, float]:
    out = {}
    for name, fn in LOSSES.items():
        want = fn(z, exact, reduction="none")
        got = fn(z, approx, reduction="none")
        out[name] = float(((got - want).abs() / want.abs().clamp_min(1.0)).max())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 1000, 10000])
    args = ap.parse_args()
    m = args.members
    print(f"N={args.n} M={m}; bytes per example; max |dL| / max(|L|, 1) vs exact float64")
    print(
        f"{'K':>6s} {'store':8s} {'bytes/ex':>10s} {'x smaller':>9s} "
        + " ".join(f"{n:>9s}" for n in LOSSES)
    )
    for k in args.ks:
        lp = synthetic_ensemble(args.n, k, members=m)
        exact = teacher_stats(lp)
        g = torch.Generator().manual_seed(3)
        z = (
            torch.log(exact.mean_probs)
            + 3.0
            + 0.5 * torch.randn(args.n, k, generator=g, dtype=torch.float64)
        )
        naive = teacher_stats(lp.float())
        naive_bytes = m * k * 4
        rows = [("naive", naive_bytes, naive)]
        for name, dt, size in (("stats16", torch.float16, 2), ("stats32", torch.float32, 4)):
            rows.append((name, 3 * k * size + 4, store(exact, dt)))
        for name, nbytes, st in rows:
            err = loss_errors(exact, st, z)
            print(
                f"{k:6d} {name:8s} {nbytes:10d} {naive_bytes / nbytes:9.2f} "
                + " ".join(f"{err[n]:9.2e}" for n in LOSSES)
            )


if __name__ == "__main__":
    main()
