"""Optimisers, learning-rate schedules and mixed precision of the training engine, from a
training config slice (defaults: :data:`pipeline.defaults.TRAINING_DEFAULTS`)."""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.defaults import setting

__all__ = ["amp_enabled", "make_optimizer", "make_scheduler"]


def make_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    """AdamW, Adam or (Nesterov) SGD over every parameter of ``model``."""
    name = setting(cfg, "optimizer")
    lr, wd = float(cfg["lr"]), float(setting(cfg, "weight_decay"))
    betas = tuple(setting(cfg, "betas"))
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd, betas=betas)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd, betas=betas)
    if name == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=lr,
            weight_decay=wd,
            momentum=float(setting(cfg, "momentum")),
            nesterov=bool(setting(cfg, "nesterov")),
        )
    raise ValueError(f"optimizer must be adamw, adam or sgd, got {name!r}")


def make_scheduler(opt: torch.optim.Optimizer, cfg: dict, steps_per_epoch: int):
    """Per-step schedule: ``cosine`` (default), ``multistep`` (epochs in ``milestones``),
    ``constant``, or ``inverse_sqrt`` (fairseq's: ``lr * min(s / w, sqrt(w / s))`` at step
    ``s = 1, 2, ...``); a linear warm-up of ``warmup_steps`` steps, else ``warmup_epochs``."""
    name = setting(cfg, "schedule")
    total = max(1, int(cfg["epochs"]) * steps_per_epoch)
    warm = setting(cfg, "warmup_steps")
    if warm is None:
        warm = int(float(setting(cfg, "warmup_epochs")) * steps_per_epoch)
    warm = int(warm)
    milestones = [int(m) * steps_per_epoch for m in setting(cfg, "milestones")]
    if name not in ("cosine", "multistep", "constant", "inverse_sqrt"):
        raise ValueError(
            f"schedule must be cosine, multistep, constant or inverse_sqrt, got {name!r}"
        )

    def factor(step: int) -> float:
        if name == "inverse_sqrt":
            return min((step + 1) / max(1, warm), math.sqrt(max(1, warm) / (step + 1)))
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
    return device.type == "cuda" and bool(setting(cfg, "amp"))
