"""Training: one deterministic, resumable loop shared by ensemble members and students, and the
ensemble-member stage (``rule train_member``).

Determinism: epoch ``e`` draws its shuffling, augmentation and dropout from generators seeded by
``(seed, e)``, so a run resumed from the checkpoint of epoch ``e`` is bit-identical on the CPU
to an uninterrupted one. The checkpoint (model, optimizer, scheduler, history) is written
atomically after every epoch, outside the rule's declared outputs, and is only reused when its
fingerprint (config slice + data + seed) matches.

Run by hand (what the rule does)::

    python -m pipeline.train --data results/data --seed 0 --config-json '{...}' \
        --out results/members/seed0/model.safetensors --ckpt results/_checkpoints/seed0.pt
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline import data as D
from pipeline import metrics
from pipeline.io import atomic_torch_save, fingerprint, save_model
from pipeline.models import build_model, count_parameters
from pipeline.resources import ResourceRecord

CPU = torch.device("cpu")
STOP_AFTER_ENV = "PROXY_END2_STOP_AFTER_EPOCH"
"""Testing hook: stop (as if killed) after this many epochs of this run, keeping the checkpoint."""


class Interrupted(RuntimeError):
    """Raised when a run stops early on purpose (:data:`STOP_AFTER_ENV`)."""


def select_device(spec: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu`` / ``cuda`` / ``cuda:N`` as given."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available")
    return dev


def set_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(int(n))


def make_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    name = cfg.get("optimizer", "adamw")
    lr, wd = float(cfg["lr"]), float(cfg.get("weight_decay", 0.0))
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    if name == "adam":
        betas = tuple(cfg.get("betas", (0.9, 0.999)))
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd, betas=betas)
    if name == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=lr,
            weight_decay=wd,
            momentum=float(cfg.get("momentum", 0.9)),
            nesterov=bool(cfg.get("nesterov", True)),
        )
    raise ValueError(f"optimizer must be adamw, adam or sgd, got {name!r}")


def make_scheduler(opt: torch.optim.Optimizer, cfg: dict, steps_per_epoch: int):
    """Per-step schedule: ``cosine`` (default), ``multistep`` (epochs in ``milestones``),
    or ``constant``; optional linear ``warmup_epochs``."""
    name = cfg.get("schedule", "cosine")
    total = max(1, int(cfg["epochs"]) * steps_per_epoch)
    warm = int(float(cfg.get("warmup_epochs", 0)) * steps_per_epoch)
    milestones = [int(m) * steps_per_epoch for m in cfg.get("milestones", [])]
    if name not in ("cosine", "multistep", "constant"):
        raise ValueError(f"schedule must be cosine, multistep or constant, got {name!r}")

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if name == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
        if name == "multistep":
            return 0.1 ** sum(step >= m for m in milestones)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def amp_enabled(device: torch.device, cfg: dict) -> bool:
    """Mixed precision (bfloat16 autocast of the network) on CUDA unless ``amp: false``; the
    losses stay float64 inside. Off on the CPU, where it is slower for these models."""
    return device.type == "cuda" and bool(cfg.get("amp", True))


def augment(x: torch.Tensor, g: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random per-image horizontal flips and a per-batch translation of ``[B, C, H, W]``."""
    flip = torch.rand(x.shape[0], generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if max_shift:
        dx, dy = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=g))
        x = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
        if dy:
            x[..., (slice(0, dy) if dy > 0 else slice(dy, None)), :] = 0
        if dx:
            x[..., (slice(0, dx) if dx > 0 else slice(dx, None))] = 0
    return x


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + epoch * 7_919) % (2**62)


def fit(
    model: nn.Module,
    images: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    cfg: dict,
    *,
    seed: int,
    ckpt_path: str | Path,
    fp: str,
    eval_fn: Callable[[nn.Module, int], dict] | None = None,
    device: torch.device = CPU,
    log: Callable[[str], None] = print,
    transform: Callable[[torch.Tensor], torch.Tensor] = D.to_float,
    batcher: Callable[[int, int, torch.Generator], list[torch.Tensor]] | None = None,
) -> list[dict]:
    """Train ``model`` on uint8 ``images [N, ...]`` for ``cfg["epochs"]`` epochs, resumably.

    ``loss_fn(logits [b, K], idx [b], epoch)`` gives the batch loss (``idx`` indexes ``images``,
    so targets can be looked up); ``eval_fn(model, epoch)`` returns validation metrics.
    ``transform`` turns a batch of ``images[idx]`` into the model's input (default: uint8
    images to floats); ``batcher(n, batch_size, generator)`` returns an epoch's index batches,
    exactly ``ceil(n / batch_size)`` of them (default: a random permutation cut in order).
    Returns the per-epoch history (also kept in the checkpoint).
    """
    epochs, bs = int(cfg["epochs"]), int(cfg["batch_size"])
    n = images.shape[0]
    steps = math.ceil(n / bs)
    model.to(device)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, steps)
    history: list[dict] = []
    start = 0
    ckpt_path = Path(ckpt_path)
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") == fp:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            history, start = state["history"], int(state["epoch"])
            log(f"resuming from {ckpt_path} after epoch {start}/{epochs}")
        else:
            log(f"ignoring stale checkpoint {ckpt_path} (config, data or seed changed)")
    stop_after = os.environ.get(STOP_AFTER_ENV)
    use_amp = amp_enabled(device, cfg)
    aug, workers = bool(cfg.get("augment", False)), int(cfg.get("workers", 0))
    in_memory = isinstance(images, torch.Tensor)
    if device.type == "cuda" and in_memory:  # page-locked: asynchronous copies to the GPU
        images = images.pin_memory()
    grad_clip = cfg.get("grad_clip")
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        torch.manual_seed(_epoch_seed(seed, epoch) + 1)
        model.train()
        if batcher is None:
            perm = torch.randperm(n, generator=g)
            batches = [perm[i * bs : (i + 1) * bs] for i in range(steps)]
        else:
            batches = batcher(n, bs, g)
            if len(batches) != steps:
                raise ValueError(f"batcher gave {len(batches)} batches, expected {steps}")
        total, count = 0.0, 0
        stream = D.iterate_batches(
            images,
            batches,
            train=aug,
            seed=_epoch_seed(seed, epoch),
            workers=workers,
            pin=device.type == "cuda",
        )
        for idx, xb in stream:
            x = transform(xb)
            if aug and in_memory:  # file-backed images are augmented while decoded
                x = augment(x, g)
            x = x.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(x)
            loss = loss_fn(logits.float(), idx, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(grad_clip))
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        row = {"epoch": epoch + 1, "train_loss": total / count, "lr": sched.get_last_lr()[0]}
        row["train_seconds"] = time.perf_counter() - t0  # the steps alone, before validation
        if eval_fn is not None:
            model.eval()
            with torch.no_grad():
                row.update(eval_fn(model, epoch))
        dt = time.perf_counter() - t0
        row.update({"seconds": dt, "images_per_s": count / dt})
        history.append(row)
        log(
            " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        )
        atomic_torch_save(
            {
                "fingerprint": fp,
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "history": history,
            },
            ckpt_path,
        )
        if stop_after and epoch + 1 - start >= int(stop_after) and epoch + 1 < epochs:
            raise Interrupted(f"stopped after epoch {epoch + 1} ({STOP_AFTER_ENV}={stop_after})")
    return history


@torch.no_grad()
def predict_logits(
    model: nn.Module, images, device: torch.device = CPU, batch_size: int = 1024, workers: int = 0
) -> torch.Tensor:
    """float32 logits ``[N, K]`` of ``model`` (eval mode) over uint8 ``images [N, ...]`` or a
    file-backed image set (decoded by ``workers`` DataLoader workers)."""
    model.eval().to(device)
    n = images.shape[0]
    batches = [torch.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    out = []
    for _, xb in D.iterate_batches(images, batches, workers=workers, pin=device.type == "cuda"):
        out.append(model(D.to_float(xb).to(device, non_blocking=True)).float().cpu())
    return torch.cat(out)


def predict_log_probs(
    model: nn.Module, images, device: torch.device = CPU, batch_size: int = 1024, workers: int = 0
) -> torch.Tensor:
    """float32 log-softmax ``[N, K]``: :func:`predict_logits` normalised."""
    return torch.log_softmax(predict_logits(model, images, device, batch_size, workers), -1)


def write_history(history: list[dict], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for row in history for k in row))
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, path)


def train_member(
    data_dir: str | Path,
    cfg: dict,
    seed: int,
    out: str | Path,
    ckpt: str | Path,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Train one ensemble member on the prepared ``train`` split (cross-entropy)."""
    manifest = D.load_manifest(data_dir)
    train = D.load_split(data_dir, "train")
    val = D.load_split(data_dir, "val")
    k = int(manifest["num_classes"])
    in_ch = D.channels(train["images"])
    torch.manual_seed(seed)
    model = build_model(cfg["model"], k, in_ch)
    device = select_device(cfg.get("device", "auto"))
    log(
        f"member seed={seed} model={cfg['model']} params={count_parameters(model)} "
        f"device={device} n_train={len(train['labels'])}"
    )
    labels = train["labels"].to(device)
    smoothing = float(cfg.get("label_smoothing", 0.0))

    def loss_fn(logits, idx, epoch):
        return F.cross_entropy(logits, labels[idx.to(device)], label_smoothing=smoothing)

    def eval_fn(model, epoch):
        lp = predict_log_probs(model, val["images"], device, workers=int(cfg.get("workers", 0)))
        p = lp.exp().double()
        y = val["labels"]
        return {"val_acc": metrics.accuracy(p, y), "val_nll": metrics.nll(p, y)}

    meta = {
        "role": "member",
        "num_classes": k,
        "in_channels": in_ch,
        "data_sha256": manifest["splits"]["train"]["sha256"],
    }
    return fit_and_save(
        model,
        train["images"],
        loss_fn,
        cfg,
        seed=seed,
        ckpt=ckpt,
        out=out,
        fp_inputs={"data": meta["data_sha256"]},
        meta=meta,
        eval_fn=eval_fn,
        device=device,
        log=log,
    )


def fit_and_save(
    model: nn.Module,
    images,
    loss_fn,
    cfg: dict,
    *,
    seed: int,
    ckpt,
    out,
    fp_inputs: dict,
    meta: dict,
    eval_fn,
    device: torch.device,
    log: Callable[[str], None],
    **fit_options,
) -> list[dict]:
    """What every training stage does around :func:`fit`: the checkpoint fingerprint (config
    slice without the device, seed, ``fp_inputs``), the resumable fit, then the weights with
    ``meta`` + config + history beside them, and ``history.csv``. ``fit_options`` go to
    :func:`fit` (``transform``, ``batcher``)."""
    cfg_fp = {k: v for k, v in cfg.items() if k != "device"}  # resuming on another device is fine
    fp = fingerprint({"cfg": cfg_fp, "seed": seed, **fp_inputs})
    history = fit(
        model,
        images,
        loss_fn,
        cfg,
        seed=seed,
        ckpt_path=ckpt,
        fp=fp,
        eval_fn=eval_fn,
        device=device,
        log=log,
        **fit_options,
    )
    save_model(model.cpu(), out, {**meta, "seed": seed, "config": cfg, "history": history})
    write_history(history, Path(out).with_name("history.csv"))
    return history


def training_cli(description: str, stage: str, run, extra_args=None) -> None:
    """Command line shared by the training stages (``train_member``, ``distill``): the common
    flags, the resource record, and exit code 3 when a run stops early (:data:`STOP_AFTER_ENV`).
    ``run(args, cfg, log)`` trains and returns the history."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--seed", required=True, type=int)
    ap.add_argument("--config-json", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--ckpt", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--resources-json", type=Path, default=None, help="resource record to write")
    if extra_args:
        extra_args(ap)
    args = ap.parse_args()
    set_threads(args.threads)
    cfg = {**json.loads(args.config_json), "device": args.device}
    try:
        with ResourceRecord(args.resources_json, stage, select_device(args.device)) as rec:
            history = run(args, cfg, lambda s: print(s, flush=True))
            rec.samples = int(sum(h["images_per_s"] * h["seconds"] for h in history))
    except Interrupted as err:
        print(err, flush=True)
        sys.exit(3)


def main() -> None:
    training_cli(
        "Train one ensemble member (rule train_member)",
        "train_member",
        lambda a, cfg, log: train_member(a.data, cfg, a.seed, a.out, a.ckpt, log=log),
    )


if __name__ == "__main__":
    main()
