"""The training engine's checkpoint: one file that resumes a run where it stopped.

Written atomically after every epoch and, within an epoch, after the first step that ends
:func:`checkpoint_seconds` after the last write (then with the step reached, the dropout
generator's state and the epoch's running sums). It lives outside the rule's declared outputs
and is only resumed when its fingerprint (config slice + inputs + code + seed) matches: a
checkpoint of other code, inputs or config is never resumed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pipeline.io import atomic_torch_save

__all__ = [
    "CHECKPOINT_MINUTES",
    "CHECKPOINT_MINUTES_ENV",
    "Checkpoint",
    "Resume",
    "checkpoint_seconds",
    "read_checkpoint",
]

CHECKPOINT_MINUTES = 10.0
"""Default minutes of training between two checkpoints inside an epoch (one process on the CPU
or one GPU; a data-parallel job checkpoints after each epoch only). The environment variable
:data:`CHECKPOINT_MINUTES_ENV` sets it for a job; 0 checkpoints after each epoch only. Not part
of any config slice: changing it retrains nothing and leaves every result the same."""
CHECKPOINT_MINUTES_ENV = "PROXY_END2_CHECKPOINT_MINUTES"


def checkpoint_seconds() -> float:
    """Seconds of training between checkpoints inside an epoch (:data:`CHECKPOINT_MINUTES`,
    or :data:`CHECKPOINT_MINUTES_ENV`); 0: after each epoch only."""
    raw = os.environ.get(CHECKPOINT_MINUTES_ENV)
    if raw is None or raw.strip() == "":
        return 60.0 * CHECKPOINT_MINUTES
    try:
        minutes = float(raw)
    except ValueError:
        minutes = float("nan")
    if not math.isfinite(minutes) or minutes < 0:
        raise ValueError(
            f"{CHECKPOINT_MINUTES_ENV}={raw!r}: must be a number of minutes >= 0 "
            "(0: checkpoint after each epoch only)"
        )
    return 60.0 * minutes


def read_checkpoint(path: Path, log: Callable[[str], None]) -> dict | None:
    """The checkpoint at ``path``, or ``None`` when there is none or it cannot be read (a
    truncated or corrupt file is reported and trained over, never fatal)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is equally useless
        log(f"ignoring unreadable checkpoint {path} ({type(err).__name__}): training from scratch")
        return None
    if not isinstance(state, dict):
        log(f"ignoring unreadable checkpoint {path} (not a checkpoint): training from scratch")
        return None
    return state


@dataclass
class Resume:
    """Where a run starts.

    Attributes:
        epoch: epochs done.
        step: steps done in epoch ``epoch`` (0: it starts at its beginning).
        partial: with ``step``, that epoch's running sums and the dropout generator's state.
        history: the per-epoch rows of the epochs done.
        curve: the learning-curve rows recorded so far.
    """

    epoch: int = 0
    step: int = 0
    partial: dict | None = None
    history: list[dict] = field(default_factory=list)
    curve: list[dict] = field(default_factory=list)


class Checkpoint:
    """The checkpoint file of one run, identified by ``fingerprint``."""

    def __init__(self, path: str | Path, fingerprint: str, log: Callable[[str], None]):
        self.path, self.fingerprint, self.log = Path(path), fingerprint, log

    def resume(self, model: nn.Module, opt, sched, steps: int, epochs: int) -> Resume:
        """Load the checkpoint into ``model``, ``opt`` and ``sched`` when it is this run's (and
        its step is inside an epoch of ``steps``); where to start either way."""
        state = read_checkpoint(self.path, self.log)
        if state is None:
            return Resume()
        at = int(state.get("step", 0))
        if state.get("fingerprint") != self.fingerprint or not 0 <= at < steps:
            self.log(f"ignoring stale checkpoint {self.path} (config, code, data or seed changed)")
            return Resume()
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        where = Resume(int(state["epoch"]), at, state["partial"] if at else None)
        where.history, where.curve = state["history"], list(state.get("curve", []))
        self.log(
            f"resuming from {self.path} "
            + (
                f"at step {where.step}/{steps} of epoch {where.epoch + 1}/{epochs}"
                if where.step
                else f"after epoch {where.epoch}/{epochs}"
            )
        )
        return where

    def save(
        self,
        model: nn.Module,
        opt,
        sched,
        history: list[dict],
        curve: list[dict],
        epochs_done: int,
        steps_done: int = 0,
        sums: dict | None = None,
        device: torch.device | None = None,
    ) -> None:
        """After ``epochs_done`` epochs and ``steps_done`` steps of the next (with that epoch's
        running ``sums`` and the dropout generator's state, on the CPU and on ``device``)."""
        state = {
            "fingerprint": self.fingerprint,
            "epoch": epochs_done,
            "step": steps_done,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "history": history,
            "curve": curve,
        }
        if steps_done:
            rng = {"cpu_rng": torch.get_rng_state()}
            if device is not None and device.type == "cuda":
                rng["cuda_rng"] = torch.cuda.get_rng_state(device)
            state["partial"] = {**sums, **rng}
        atomic_torch_save(state, self.path)
