"""Where a job runs: its device and its threads (shared by every stage that runs a model)."""

from __future__ import annotations

import torch

from pipeline import distributed as D

__all__ = ["CPU", "select_device", "set_threads"]

CPU = torch.device("cpu")


def select_device(spec: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu`` / ``cuda`` / ``cuda:N`` as given. In
    a data-parallel job (:mod:`pipeline.distributed`), ``cuda`` is this rank's GPU."""
    if spec == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available")
    world = D.world()
    if dev.type == "cuda" and dev.index is None and world.size > 1:
        dev = torch.device("cuda", world.local_rank)
    return dev


def set_threads(n: int | None) -> None:
    """Torch's intra-op threads of this process (left as they are for ``None``/0)."""
    if n:
        torch.set_num_threads(int(n))
