"""Accuracy per CPU-second of candidate Fashion-MNIST members (how the default model was chosen).

Trains each candidate ``small_cnn`` config on the first ``--train`` training images (the default
config uses 55,000) with the default recipe (AdamW, lr 3e-3, weight decay 5e-4, cosine to 0 over
every step, batch 128), then prints its training time, throughput and test accuracy. One torch
thread per process, as the pipeline's training jobs run; run it on a quiet machine.

    python benchmarks/bench_image_arch.py            # the default candidates
    python benchmarks/bench_image_arch.py --candidates 16,7,3,0 24,7,3,0
                                                     # width,pool,epochs,augment (0/1)
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from pipeline.tasks.image.batches import augment, to_float
from pipeline.tasks.image.data import fashion_mnist
from pipeline.tasks.image.models import build_model

DEFAULT = ("16,1,3,1", "16,1,3,0", "16,3,3,0", "16,7,3,0", "16,7,4,0", "16,7,3,1", "24,7,3,0")


def run(data, width: int, pool: int, epochs: int, aug: bool, n: int, seed: int = 0) -> dict:
    x, y, xt, yt = data
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = build_model({"name": "small_cnn", "width": width, "pool": pool}, 10, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    steps = epochs * math.ceil(n / 128)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    t0, c0 = time.perf_counter(), time.process_time()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, 128):
            idx = perm[i : i + 128]
            xb = augment(x[idx], g) if aug else x[idx]
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    model.eval()
    with torch.no_grad():
        correct = sum(
            int((model(xt[i : i + 1000]).argmax(1) == yt[i : i + 1000]).sum())
            for i in range(0, len(yt), 1000)
        )
    acc = correct / len(yt)
    return {
        "width": width,
        "pool": pool,
        "epochs": epochs,
        "augment": aug,
        "params": sum(p.numel() for p in model.parameters()),
        "train_s": round(wall, 1),
        "img_per_s": round(epochs * n / wall),
        "cpu_s": round(cpu, 1),
        "test_acc": acc,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", nargs="*", default=list(DEFAULT))
    ap.add_argument("--train", type=int, default=55000)
    ap.add_argument("--path", default=None, help="Fashion-MNIST IDX directory")
    args = ap.parse_args()
    torch.set_num_threads(1)
    raw = fashion_mnist(args.path)
    n = min(args.train, len(raw["train"]))
    data = (
        to_float(raw["train"].images[:n]),
        raw["train"].labels[:n],
        to_float(raw["test"].images),
        raw["test"].labels,
    )
    print("| width | pool | epochs | augment | params | train s | CPU s | img/s | test acc |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in args.candidates:
        w, p, e, a = (int(v) for v in c.split(","))
        r = run(data, w, p, e, bool(a), n)
        print(
            f"| {r['width']} | {r['pool']} | {r['epochs']} | {r['augment']} | {r['params']:,} "
            f"| {r['train_s']} | {r['cpu_s']} | {r['img_per_s']:,} | {r['test_acc']:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
