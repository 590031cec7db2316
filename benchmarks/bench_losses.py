"""Forward+backward time of every distillation loss against EnD (``end_loss``) and cross-entropy.

Run on a quiet machine:  ``python benchmarks/bench_losses.py [--sizes 256x1000 256x40000]``

Student logits are a float32 leaf (as a network's output would be); the teacher is
``pipeline.stages.gradient_analysis.synthetic_ensemble`` (Zipf-like class profile plus member
noise), so pi_bar has a realistic head and a long tail. Prints milliseconds (median of ``--repeat``
runs) and the ratio to ``end_loss`` and to ``F.cross_entropy``, for both loss backends
(``eager`` torch special functions, ``compiled`` fused cores; ``auto`` picks compiled for
>= 2**17 logits). The first compiled call of each loss compiles (seconds; cached on disk)
and is not timed.
This measures and prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from pipeline.maths.losses import (
    BACKEND_ENV,
    end2_loss,
    end_loss,
    proxy_fkl_loss,
    proxy_rkl_loss,
)
from pipeline.maths.stats import teacher_stats
from pipeline.stages.gradient_analysis import synthetic_ensemble


def time_ms(fn, repeat: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(runs)


def bench(b: int, k: int, m: int, repeat: int) -> None:
    member_lp = synthetic_ensemble(b, k, members=m).float()
    t_stats = time_ms(lambda: teacher_stats(member_lp), repeat)
    stats = teacher_stats(member_lp)
    labels = stats.mean_probs.argmax(-1)
    g = torch.Generator().manual_seed(1)
    logits = torch.log(stats.mean_probs.float()) + 3.0 + 0.5 * torch.randn(b, k, generator=g)
    logits.requires_grad_(True)

    def step(loss_fn):
        def run():
            logits.grad = None
            loss_fn().backward()

        return run

    cases = {
        "F.cross_entropy (float32)": lambda: F.cross_entropy(logits, labels),
        "end_loss": lambda: end_loss(logits, stats),
    }
    for backend in ("eager", "compiled"):
        cases[f"end2_loss [{backend}]"] = (backend, lambda: end2_loss(logits, stats))
        cases[f"proxy_rkl_loss [{backend}]"] = (backend, lambda: proxy_rkl_loss(logits, stats))
        cases[f"proxy_fkl_loss [{backend}]"] = (backend, lambda: proxy_fkl_loss(logits, stats))
    times = {}
    for name, case in cases.items():
        backend, fn = case if isinstance(case, tuple) else ("auto", case)
        os.environ[BACKEND_ENV] = backend
        times[name] = time_ms(step(fn), repeat)
    os.environ.pop(BACKEND_ENV)
    ce, end = times["F.cross_entropy (float32)"], times["end_loss"]
    print(f"\nB={b} K={k} M={m}  threads={torch.get_num_threads()}  (median of {repeat})")
    print(f"{'loss (forward+backward)':28s} {'ms':>9s} {'x end_loss':>11s} {'x CE':>8s}")
    for name, ms in times.items():
        print(f"{name:28s} {ms:9.2f} {ms / end:11.2f} {ms / ce:8.2f}")
    times_stats = {"teacher_stats (M members)": t_stats}
    for name, ms in times_stats.items():
        print(f"{name:28s} {ms:9.2f} {ms / end:11.2f} {ms / ce:8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["256x1000", "256x40000"], help="BxK pairs")
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    for size in args.sizes:
        b, k = (int(v) for v in size.lower().split("x"))
        bench(b, k, args.members, args.repeat)


if __name__ == "__main__":
    main()
