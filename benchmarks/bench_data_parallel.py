"""Samples/s of a data-parallel member against one process (``pipeline.launch``, gloo on the CPU).

Trains the same ``small_cnn`` member (AdamW, the given global batch) through the train stage as
``processes x threads`` layouts and prints each run's training throughput: examples per second
over the epochs' steps (``train_seconds`` in the history: validation and start-up excluded) and
the speed-up over the first layout. Start-up (interpreter, torch import, process group) is shown
apart. Run it on a quiet machine; on the CPU the fair comparison is between layouts that use
the same number of cores (1x2 against 2x1).

    python benchmarks/bench_data_parallel.py --data results/default/data          # 1x1 1x2 2x1
    python benchmarks/bench_data_parallel.py --data results/smoke/data --layouts 1x1 2x1 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(data: Path, processes: int, threads: int, cfg: dict, work: Path) -> dict:
    out = work / f"p{processes}t{threads}" / "model.safetensors"
    cmd = [sys.executable, "-m", "pipeline.launch", "--processes", str(processes), "--"]
    cmd += ["pipeline.stages.train", "--task", "image", "--data", str(data), "--seed", "0"]
    cmd += ["--config-json", json.dumps(cfg), "--device", "cpu", "--threads", str(threads)]
    cmd += ["--out", str(out), "--ckpt", str(out.with_suffix(".pt"))]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{processes}x{threads} failed:\n{done.stderr[-3000:]}")
    history = json.loads(out.with_name("model.json").read_text())["history"]
    steps_s = sum(h["train_seconds"] for h in history)
    other = sum(h["seconds"] - h["train_seconds"] for h in history)  # validation
    samples = sum(h["train_samples"] for h in history)
    return {"steps_s": steps_s, "samples": samples, "wall": wall, "startup": wall - steps_s - other}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a prepared image data directory")
    ap.add_argument("--layouts", nargs="+", default=["1x1", "1x2", "2x1"], help="PxT")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128, help="the global batch")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--pool", type=int, default=7)
    a = ap.parse_args()
    cfg = {
        "model": {"name": "small_cnn", "width": a.width, "pool": a.pool},
        "epochs": a.epochs,
        "batch_size": a.batch_size,
        "optimizer": "adamw",
        "lr": 0.003,
        "weight_decay": 0.0005,
    }
    n = json.loads((a.data / "manifest.json").read_text())["splits"]["train"]["n"]
    print(
        f"small_cnn width {a.width} pool {a.pool}, {n} images x {a.epochs} epoch(s), "
        f"global batch {a.batch_size}, AdamW; CPU, gloo"
    )
    print(
        f"{'layout':>8} {'cores':>5} {'steps s':>8} {'samples/s':>10} {'speed-up':>8} "
        f"{'start-up s':>10}"
    )
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for layout in a.layouts:
            p, t = (int(v) for v in layout.split("x"))
            r = run(a.data, p, t, cfg, Path(tmp))
            rate = r["samples"] / r["steps_s"]
            base = base or rate
            print(
                f"{layout:>8} {p * t:>5} {r['steps_s']:>8.1f} {rate:>10.0f} "
                f"{rate / base:>7.2f}x {r['startup']:>10.1f}"
            )


if __name__ == "__main__":
    main()
