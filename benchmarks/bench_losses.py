"""Forward+backward time and peak memory of every distillation loss against EnD (``end_loss``),
a float32 knowledge-distillation baseline and cross-entropy.

Run on a quiet machine:  ``python benchmarks/bench_losses.py [--sizes 256x1000 256x40000]``

Student logits are a float32 leaf (as a network's output would be); the teacher is
``pipeline.stages.gradient_analysis.synthetic_ensemble`` (Zipf-like class profile plus member
noise), so pi_bar has a realistic head and a long tail. Prints milliseconds (median of ``--repeat``
runs) and the ratio to ``end_loss``, to float32 KD (``F.kl_div(log_softmax(z), pi_bar)``, the
baseline of issue 14) and to ``F.cross_entropy``, for both loss backends
(``eager`` torch special functions, ``compiled`` fused cores; ``auto`` picks compiled for
>= 2**17 logits). The first compiled call of each loss compiles (seconds; cached on disk)
and is not timed. With ``--memory`` each case also runs once in a fresh process, which prints
the growth of its peak resident memory over the set-up (``ru_maxrss``: CPU; on CUDA,
``torch.cuda.max_memory_allocated``).
This measures and prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.maths._kernels import EAGER32_MAX_NUMEL
from pipeline.maths.losses import (
    BACKEND_ENV,
    end2_loss,
    end_loss,
    gradient_only,
    proxy_fkl_loss,
    proxy_rkl_loss,
)
from pipeline.maths.stats import teacher_stats
from pipeline.stages.gradient_analysis import synthetic_ensemble

DEVICE = torch.device("cpu")
"""Where the cases run (``--device``); on CUDA every timing waits for the GPU."""


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def time_ms(fn, repeat: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeat):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        runs.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(runs)


def interleaved_ms(fns: dict, repeat: int) -> dict[str, tuple[float, float]]:
    """``name -> (median, min)`` milliseconds, the cases run round-robin ``repeat`` times (so a
    slow spell of the machine hits every case alike); one warm-up call each first."""
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for backend, fn in fns.values():
        os.environ[BACKEND_ENV] = backend
        fn()
    for _ in range(repeat):
        for name, (backend, fn) in fns.items():
            os.environ[BACKEND_ENV] = backend
            _sync()
            t0 = time.perf_counter()
            fn()
            _sync()
            runs[name].append((time.perf_counter() - t0) * 1e3)
    os.environ.pop(BACKEND_ENV, None)
    return {name: (statistics.median(r), min(r)) for name, r in runs.items()}


def setup(b: int, k: int, m: int):
    """Teacher statistics of a synthetic ensemble, labels and float32 student logits (a leaf)."""
    member_lp = synthetic_ensemble(b, k, members=m).float()
    stats = teacher_stats(member_lp)
    labels = stats.mean_probs.argmax(-1)
    g = torch.Generator().manual_seed(1)
    logits = torch.log(stats.mean_probs.float()) + 3.0 + 0.5 * torch.randn(b, k, generator=g)
    member_lp, stats, labels = member_lp.to(DEVICE), stats.to(DEVICE), labels.to(DEVICE)
    return member_lp, stats, labels, logits.to(DEVICE).requires_grad_(True)


def cases(stats, labels, logits) -> dict:
    """name -> (backend, loss thunk)."""
    pbar32 = stats.mean_probs.float()
    out = {
        "F.cross_entropy (float32)": ("auto", lambda: F.cross_entropy(logits, labels)),
        "KD float32 (kl_div)": (
            "auto",
            lambda: F.kl_div(F.log_softmax(logits, -1), pbar32, reduction="batchmean"),
        ),
        "end_loss": ("auto", lambda: end_loss(logits, stats)),
    }
    for backend in ("eager", "compiled"):
        out[f"end2_loss [{backend}]"] = (backend, lambda: end2_loss(logits, stats, 0.0))
        out[f"proxy_rkl_loss [{backend}]"] = (
            backend,
            lambda: proxy_rkl_loss(logits, stats, 1.0, 1.0),
        )
        out[f"proxy_fkl_loss [{backend}]"] = (
            backend,
            lambda: proxy_fkl_loss(logits, stats, 1.0, 1.0),
        )
    for backend in ("eager", "compiled"):  # float32 gradient, no value (pipeline.maths.values)
        if backend == "eager" and logits.numel() > EAGER32_MAX_NUMEL:
            continue  # eager float32 stops there (the float64 kernels run): see _kernels
        for name, fn in (
            ("end", end_loss),
            ("end2", lambda z, s: end2_loss(z, s, 0.0)),
            ("proxy_rkl", lambda z, s: proxy_rkl_loss(z, s, 1.0, 1.0)),
        ):
            out[f"{name}_loss grad32 [{backend}]"] = (backend, _gradient_only(fn, logits, stats))
    return out


def _gradient_only(loss_fn, logits, stats):
    def run():
        with gradient_only():
            return loss_fn(logits, stats)

    return run


def step(logits, loss_fn):
    def run():
        logits.grad = None
        loss_fn().backward()

    return run


def peak_mb(name: str, b: int, k: int, m: int) -> float:
    """Peak memory growth of one forward+backward of case ``name``, in a fresh process."""
    r = subprocess.run(
        [sys.executable, __file__, "--one", name, "--sizes", f"{b}x{k}", "--members", str(m),
         "--device", str(DEVICE)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(r.stdout.strip().splitlines()[-1])


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB -> MB
    raise RuntimeError(f"no {field} in /proc/self/status")


def one(name: str, b: int, k: int, m: int) -> None:
    """The ``--one`` mode: print the peak memory growth (MB) of one warm call of ``name`` over
    the resident memory before it (Linux: the peak is reset through ``/proc/self/clear_refs``;
    CUDA: ``max_memory_allocated``)."""
    _, stats, labels, logits = setup(b, k, m)
    backend, fn = cases(stats, labels, logits)[name]
    os.environ[BACKEND_ENV] = backend
    run = step(logits, fn)
    run()  # compile / warm up
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run()
        print((torch.cuda.max_memory_allocated() - base) / 2**20)
        return
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    base = _status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    run()
    print(_status_mb("VmHWM") - base)


def bench(b: int, k: int, m: int, repeat: int, memory: bool, every: int) -> None:
    member_lp, stats, labels, logits = setup(b, k, m)
    t_stats = time_ms(lambda: teacher_stats(member_lp), repeat)
    steps = {
        name: (backend, step(logits, fn))
        for name, (backend, fn) in cases(stats, labels, logits).items()
    }
    times = interleaved_ms(steps, repeat)
    peaks = {name: peak_mb(name, b, k, m) for name in steps} if memory else {}
    for name in ("end", "end2", "proxy_rkl"):  # a training step: value on one step in `every`
        for i in (0, 1):
            full, grad = (
                times[f"{name}_loss [compiled]" if name != "end" else "end_loss"][i],
                (times[f"{name}_loss grad32 [compiled]"][i]),
            )
            amortised = (full + (every - 1) * grad) / every
            times.setdefault(f"{name}_loss value 1/{every} [compiled]", [0.0, 0.0])[i] = amortised
    ce, kd, end = (
        times[n] for n in ("F.cross_entropy (float32)", "KD float32 (kl_div)", "end_loss")
    )
    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu"
    print(f"\nB={b} K={k} M={m}  {where} threads={torch.get_num_threads()}  "
          f"(interleaved, {repeat} rounds)")  # fmt: skip
    head = f"{'loss (forward+backward)':36s} {'ms med':>8s} {'ms min':>8s} {'x KD32 med':>11s}"
    head += f" {'x KD32 min':>11s} {'x CE':>6s}"
    print(head + (f" {'peak MB':>9s}" if memory else ""))
    for name, (med, low) in times.items():
        row = f"{name:36s} {med:8.2f} {low:8.2f} {med / kd[0]:11.2f} {low / kd[1]:11.2f}"
        row += f" {med / ce[0]:6.2f}"
        print(row + (f" {peaks[name]:9.1f}" if name in peaks else ""))
    name = "teacher_stats (M members)"
    print(f"{name:36s} {t_stats:8.2f} {'':8s} {t_stats / kd[0]:11.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["256x1000", "256x40000"], help="BxK pairs")
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--memory", action="store_true", help="also each case's peak memory")
    ap.add_argument(
        "--value-every", type=int, default=10, help="amortised rows: the loss value on 1 step in N"
    )
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: --memory's worker
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    for size in args.sizes:
        b, k = (int(v) for v in size.lower().split("x"))
        if args.one:
            one(args.one, b, k, args.members)
        else:
            bench(b, k, args.members, args.repeat, args.memory, args.value_every)


if __name__ == "__main__":
    main()
