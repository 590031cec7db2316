"""Data-parallel execution (``torch.distributed``): the process group of a job, the rank's share
of a batch, and the collectives the stages need. A job started by :mod:`pipeline.launch` with
more than one process runs one copy of its stage per process ("rank"); everything here is a
no-op for a single process, so the one-process path is the plain one.

Ranks learn their place from the environment: ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (set by
``torchrun``), else ``SLURM_PROCID`` / ``SLURM_NTASKS`` / ``SLURM_LOCALID`` (set by ``srun``, the
rendezvous address then being the job's first node). Backend: NCCL on CUDA, gloo on the CPU.

Conventions the stages follow under more than one rank:
  * training: every rank draws the same epoch permutation and takes its contiguous share of
    every global batch (:func:`shard`); the loss is weighted so that DDP's gradient average is
    the gradient of the global batch mean; rank 0 alone validates, writes checkpoints, logs and
    artifacts; every rank resumes from the same checkpoint;
  * prediction (teacher cache, evaluation): the batches, cut exactly as one process cuts them,
    are dealt round-robin to the ranks and gathered back in order (:func:`deal`,
    :func:`gather_dealt`), so the artifacts are byte-identical to a one-process run's.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from pipeline.launch import GROUP_ENV, SRUN_ENV

TIMEOUT_MINUTES_ENV = "PROXY_END2_DIST_TIMEOUT_MIN"
"""Minutes a collective may wait for a slow rank (rank 0 validating, checkpointing) before the
job fails (default 60)."""
KILL_AT_ENV = "PROXY_END2_KILL_AT"
"""Testing hook, ``rank:epoch:step`` (1-based epoch and step): that rank kills itself (SIGKILL)
just before that training step, as a node failure would."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _from_env() -> tuple[World, str | None, str | None]:
    """This process's place, and the rendezvous address/port when srun (not torchrun) started
    it."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:
        rank, size, local = env["RANK"], env["WORLD_SIZE"], env.get("LOCAL_RANK", 0)
        return World(int(rank), int(size), int(local)), None, None
    if env.get(SRUN_ENV) and int(env.get("SLURM_NTASKS", "1")) > 1:
        nodes = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST", "localhost")
        first = subprocess.run(
            ["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True
        ).stdout.split()[0]
        port = str(20_000 + int(env.get("SLURM_JOB_ID", "0")) % 20_000)
        rank, size, local = env["SLURM_PROCID"], env["SLURM_NTASKS"], env.get("SLURM_LOCALID", 0)
        world = World(int(rank), int(size), int(local))
        return world, first, port
    return World(), None, None


_WORLD = World()


def world() -> World:
    """This process's rank and the job's world size (``World()`` before :func:`init`)."""
    return _WORLD


def init(device: torch.device) -> torch.device:
    """Join the job's process group when it has more than one process; returns the device this
    rank uses (``cuda`` becomes ``cuda:<local rank>``). Idempotent."""
    global _WORLD
    w, addr, port = _from_env()
    # GROUP_ENV=1: one process in a process group of one, data-parallel all the same (DDP over
    # NCCL on a GPU), so one GPU can check the data-parallel path (scripts/gpu_check.sh)
    if w.size == 1 and os.environ.get(GROUP_ENV) != "1":
        _WORLD = w
        return device
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", w.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if addr is not None:
            os.environ.setdefault("MASTER_ADDR", addr)
            os.environ.setdefault("MASTER_PORT", port)
        minutes = float(os.environ.get(TIMEOUT_MINUTES_ENV, "60"))
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            rank=w.rank,
            world_size=w.size,
            timeout=datetime.timedelta(minutes=minutes),
        )
        if w.rank == 0:
            print(f"process group: backend={backend} world={w.size}", file=sys.stderr)
    _WORLD = w
    return device


def barrier() -> None:
    """Wait for every rank (one process: nothing)."""
    if _WORLD.size > 1 and dist.is_initialized():
        dist.barrier()


def close() -> None:
    """Leave the process group (after a barrier, so no rank exits while others still talk)."""
    global _WORLD
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    _WORLD = World()


def main_only(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` on rank 0, a no-op on the others."""
    return log if _WORLD.main else (lambda s: None)


def shard(batch: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous share of a global index batch ``[b]`` (sizes differ by at most 1).
    A batch with fewer examples than ranks is refused: a rank would have nothing to train on."""
    if _WORLD.size == 1:
        return batch
    if len(batch) < _WORLD.size:
        raise ValueError(
            f"a batch of {len(batch)} example(s) cannot be split across {_WORLD.size} processes: "
            "use a batch size (and a training set) with at least one example per process in "
            "every batch"
        )
    return batch.tensor_split(_WORLD.size)[_WORLD.rank]


def global_step_stats(rows: int, value: float, placeholder: bool) -> tuple[int, float, bool]:
    """Combine one step over the ranks: ``rows`` (loss rows of this rank), ``value`` (this rank's
    mean loss) and whether it is a placeholder -> (global rows, global mean, any placeholder).
    NaN anywhere makes the mean NaN on every rank, so every rank stops together."""
    if _WORLD.size == 1:
        return rows, value, placeholder
    t = torch.tensor([float(rows), value * rows, float(placeholder)], dtype=torch.float64)
    dist.all_reduce(t)
    return int(t[0]), float(t[1] / t[0]), bool(t[2] > 0)


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped for data-parallel training (one process: ``model`` itself). Batch norm
    is synchronised over the ranks (global batch statistics, as one process computes them):
    ``nn.SyncBatchNorm`` on CUDA, :class:`CPUSyncBatchNorm2d` (1d) on the CPU, where the former does
    not run. The wrapped model shares ``model``'s parameters and state-dict keys. A process
    group of one (:data:`GROUP_ENV`) is wrapped too."""
    if _WORLD.size == 1 and not dist.is_initialized():
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    else:
        for m in model.modules():
            if type(m) in _CPU_SYNC:
                m.__class__ = _CPU_SYNC[type(m)]
    ids = [device.index] if device.type == "cuda" else None
    # synchronised batch norm keeps the ranks' buffers equal: no per-step broadcast of them
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a :func:`data_parallel` wrapper (restoring plain batch norm)."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    for m in inner.modules():
        for plain, synced in _CPU_SYNC.items():
            if type(m) is synced:
                m.__class__ = plain
    return inner


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: the gradient of every rank's input is the sum of
    the ranks' output gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class _CPUSyncMixin:
    """Batch norm whose training statistics are those of the global batch: per-channel count,
    sum and sum of squares are all-reduced over the ranks in one differentiable collective (the
    sums in float64, so the variance E[x^2] - E[x]^2 does not cancel). Evaluation mode is plain
    batch norm with the running statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        dims = [0, *range(2, x.ndim)]
        shape = [1, -1] + [1] * (x.ndim - 2)
        c = x.shape[1]
        wide = x.double()
        local = torch.cat(
            [wide.sum(dims), (wide * wide).sum(dims), wide.new_tensor([x.numel() / c])]
        )
        total = _AllReduceSum.apply(local)
        count = total[-1]
        mean = total[:c] / count
        var = (total[c : 2 * c] / count - mean * mean).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    self.momentum
                    if self.momentum is not None
                    else 1.0 / float(self.num_batches_tracked)
                )
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_mean.mul_(1 - m).add_(m * mean.to(x.dtype))
                self.running_var.mul_(1 - m).add_(m * unbiased.to(x.dtype))
        y = (x - mean.to(x.dtype).reshape(shape)) * torch.rsqrt(var + self.eps).to(x.dtype).reshape(
            shape
        )
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y


class CPUSyncBatchNorm1d(_CPUSyncMixin, nn.BatchNorm1d):
    pass


class CPUSyncBatchNorm2d(_CPUSyncMixin, nn.BatchNorm2d):
    pass


_CPU_SYNC = {nn.BatchNorm1d: CPUSyncBatchNorm1d, nn.BatchNorm2d: CPUSyncBatchNorm2d}


_ALONE = [False]


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Inside, this rank predicts by itself (:func:`deal` gives it every batch): what rank 0
    uses for validation and learning-curve points while the other ranks wait."""
    before, _ALONE[0] = _ALONE[0], True
    try:
        yield
    finally:
        _ALONE[0] = before


def sharing() -> int:
    """How many ranks share a prediction's batches here (1 outside a data-parallel job and
    inside :func:`alone`)."""
    return 1 if _ALONE[0] else _WORLD.size


def deal(batches: list) -> list:
    """This rank's batches: every ``size``-th, starting at its rank (one process: all)."""
    return batches if sharing() == 1 else batches[_WORLD.rank :: _WORLD.size]


def gather_dealt(mine: list, n: int) -> list:
    """The results of :func:`deal`'s batches (``mine``, picklable CPU objects) of every rank,
    back in the order of the ``n`` batches, on every rank."""
    if sharing() == 1:
        return mine
    parts: list = [None] * _WORLD.size
    dist.all_gather_object(parts, mine)
    return [parts[i % _WORLD.size][i // _WORLD.size] for i in range(n)]


def seed_offset() -> int:
    """Added to the per-epoch torch seed of rank > 0, so ranks draw different dropout masks
    (rank 0 draws what one process draws)."""
    return 0 if _WORLD.main else 7_919 * _WORLD.rank


def kill_hook(epoch: int, step: int) -> None:
    """:data:`KILL_AT_ENV`: SIGKILL this rank at ``epoch`` / ``step`` (0-based here)."""
    spec = os.environ.get(KILL_AT_ENV)
    if spec:
        rank, e, s = (int(v) for v in spec.split(":"))
        if rank == _WORLD.rank and (e, s) == (epoch + 1, step + 1):
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
