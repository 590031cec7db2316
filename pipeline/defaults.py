"""The training defaults: the one home of the value a training key takes when a config slice
does not set it. Read by the training engine (:mod:`pipeline.engine`, :mod:`pipeline.optim`),
the member stage (``label_smoothing``) and the config checks (:mod:`pipeline.config`); the
schemas (``workflow/schemas/definitions.schema.yaml``) only check types and ranges. Torch-free
(the workflow imports the config checks while it builds the DAG)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

__all__ = ["TRAINING_DEFAULTS", "setting"]

TRAINING_DEFAULTS = MappingProxyType(
    {
        "optimizer": "adamw",
        "weight_decay": 0.0,
        "no_weight_decay": (),  # regexes of parameter names exempt from weight decay
        "betas": (0.9, 0.999),
        "momentum": 0.9,  # sgd
        "nesterov": True,  # sgd
        "schedule": "cosine",
        "milestones": (),  # multistep: epochs where the rate drops tenfold
        "warmup_epochs": 0,
        "warmup_steps": None,  # overrides warmup_epochs where set (inverse_sqrt's w)
        "label_smoothing": 0.0,  # members' cross-entropy
        "grad_clip": None,
        "amp": True,  # bfloat16 autocast on CUDA (never on the CPU)
        "loss_value_every": 10,
        "curve_every": None,
    }
)
"""Every optional training key and its default. ``loss_value_every``: a distillation loss
computes its value (float64, for the logs and ``train_loss``) on the first step of an epoch,
every this many steps and the last; the other steps take its float32 gradient alone
(:mod:`pipeline.maths.values`). ``curve_every``: a learning-curve point every this many steps
(``None``: no curve)."""


def setting(cfg: dict, key: str) -> Any:
    """``cfg[key]``, or its default from :data:`TRAINING_DEFAULTS`."""
    return cfg.get(key, TRAINING_DEFAULTS[key])
