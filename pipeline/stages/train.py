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

import torch.nn.functional as F

from pipeline.defaults import setting
from pipeline.imports import code_fingerprint
from pipeline.training import count_parameters, fit_and_save, seeded_model, start, training_cli


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
    smoothing = float(setting(cfg, "label_smoothing"))

    def loss_fn(logits, idx, epoch, x):
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
