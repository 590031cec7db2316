"""Stage ``train`` (``rule train_member``): one deep-ensemble member, trained with cross-entropy
on the task's training set by the shared engine (:func:`pipeline.engine.fit`): resumable,
deterministic, checkpointed outside the declared outputs.

Run by hand (what the rule does)::

    python -m pipeline.stages.train --task image --data results/default/data --seed 0 \
        --config-json '{...}' --out results/default/members/seed0/model.safetensors \
        --ckpt results/default/checkpoints/members/seed0.pt
    # the token task adds --num-classes V
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline import tasks
from pipeline.engine import (
    count_parameters,
    fit_and_save,
    select_device,
    training_cli,
)
from pipeline.imports import code_fingerprint


def start(task: str, data_dir, cfg: dict, num_classes: int | None):
    """What every training stage begins with: the task, the device, the training set."""
    impl = tasks.load(task)
    device = select_device(cfg.get("device", "auto"))
    return impl, device, impl.training_set(data_dir, cfg, num_classes, device)


def seeded_model(impl, cfg: dict, ts, seed: int) -> torch.nn.Module:
    """The task's model for ``cfg["model"]``, initialised from ``seed``."""
    torch.manual_seed(seed)
    return impl.build_model(cfg["model"], ts.info)


def train_member(
    task: str,
    data_dir: str | Path,
    cfg: dict,
    seed: int,
    out: str | Path,
    ckpt: str | Path,
    num_classes: int | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Train one member of ``task``; returns the per-epoch history."""
    impl, device, ts = start(task, data_dir, cfg, num_classes)
    model = seeded_model(impl, cfg, ts, seed)
    log(f"member seed={seed} {ts.about} params={count_parameters(model)} device={device}")
    smoothing = float(cfg.get("label_smoothing", 0.0))

    def loss_fn(logits, idx, epoch):
        return F.cross_entropy(logits, ts.targets(idx), label_smoothing=smoothing)

    def eval_fn(model, epoch):
        return impl.validate(model, ts, device)

    meta = {"role": "member", "task": task, **ts.info, "data_sha256": ts.data_sha256}
    return fit_and_save(
        model,
        ts.feed,
        loss_fn,
        cfg,
        seed=seed,
        ckpt=ckpt,
        out=out,
        fp_inputs={**ts.fp_inputs, "code": code_fingerprint("train", task)},
        meta=meta,
        eval_fn=eval_fn,
        device=device,
        log=log,
    )


def main() -> None:
    training_cli(
        "Train one ensemble member (rule train_member)",
        "train_member",
        lambda a, cfg, log: train_member(
            a.task, a.data, cfg, a.seed, a.out, a.ckpt, a.num_classes, log=log
        ),
    )


if __name__ == "__main__":
    main()
