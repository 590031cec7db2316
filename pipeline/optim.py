"""Optimisers, learning-rate schedules and mixed precision of the training engine, from a
training config slice (defaults: :data:`pipeline.defaults.TRAINING_DEFAULTS`)."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from pipeline.defaults import setting

__all__ = ["amp_enabled", "make_optimizer", "make_scheduler", "parameter_groups"]


def parameter_groups(model: nn.Module, cfg: dict):
    """``model``'s parameters as the optimiser takes them: all of them (one group), or, with
    ``no_weight_decay`` (regular expressions searched in the parameter names), two groups, the
    second, the parameters a pattern finds, without weight decay (the official ImageNet recipe
    exempts the residual blocks' batch-norm scales and shifts). A pattern that finds no
    parameter is an error naming it (a typo would otherwise decay everything silently)."""
    patterns = list(setting(cfg, "no_weight_decay"))
    if not patterns:
        return model.parameters()
    found = {p: 0 for p in patterns}
    decay, exempt = [], []
    for name, param in model.named_parameters():
        hits = [p for p in patterns if re.search(p, name)]
        for p in hits:
            found[p] += 1
        (exempt if hits else decay).append(param)
    missing = [p for p, n in found.items() if n == 0]
    if missing:
        some = ", ".join(n for n, _ in list(model.named_parameters())[:4])
        raise ValueError(
            f"no_weight_decay pattern(s) {missing} find no parameter of the model (its "
            f"parameter names look like: {some}, ...)"
        )
    return [{"params": decay}, {"params": exempt, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    """AdamW, Adam or (Nesterov) SGD over the parameters of ``model``
    (:func:`parameter_groups`)."""
    name = setting(cfg, "optimizer")
    lr, wd = float(cfg["lr"]), float(setting(cfg, "weight_decay"))
    betas = tuple(setting(cfg, "betas"))
    params = parameter_groups(model, cfg)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=betas)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=betas)
    if name == "sgd":
        return torch.optim.SGD(
            params,
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
