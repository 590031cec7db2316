"""The training engine: one deterministic, resumable loop shared by every member and student of
every task.

Determinism: epoch ``e`` draws its shuffling, augmentation and dropout from generators seeded by
``(seed, e)``, so a run resumed from a checkpoint (:mod:`pipeline.checkpoint`) is bit-identical
on the CPU to an uninterrupted one, whether it stopped after an epoch or inside one (the resumed
epoch replays its batch stream up to the step reached without training on it).

A task hands its training set to :func:`fit` as a :class:`Feed`: how many examples there are, how
an epoch's index batches are drawn, and how a batch of indices becomes the model's input. The
optimiser and schedule come from :mod:`pipeline.optim`, every default from
:data:`pipeline.defaults.TRAINING_DEFAULTS`; what a training stage does around :func:`fit`
(artifacts, command line) is :mod:`pipeline.training`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline import distributed as D
from pipeline.checkpoint import Checkpoint, checkpoint_seconds
from pipeline.defaults import setting
from pipeline.device import CPU
from pipeline.maths.values import gradient_only
from pipeline.optim import amp_enabled, make_optimizer, make_scheduler
from pipeline.progress import JOB, Progress, tensorboard_writer

__all__ = ["STOP_AFTER_ENV", "Diverged", "Feed", "Interrupted", "TrainingSet", "fit"]

STOP_AFTER_ENV = "PROXY_END2_STOP_AFTER_EPOCH"
"""Testing hook: stop (as if killed) after this many epochs of this run, keeping the checkpoint."""


class Interrupted(RuntimeError):
    """Raised when a run stops early on purpose (:data:`STOP_AFTER_ENV`)."""


class Diverged(RuntimeError):
    """The loss or the gradient became non-finite: training stops before the step is applied,
    and nothing more is checkpointed (the last checkpoint is one written before that step)."""

    def __init__(self, what: str, epoch: int, step: int, steps: int):
        super().__init__(
            f"training diverged: {what} at epoch {epoch + 1}, step {step + 1}/{steps}. Lower the "
            "learning rate, set grad_clip, or check the inputs; the run's last checkpoint was "
            "written before this step (its model was not written)"
        )


Batcher = Callable[[int, int, torch.Generator], list[torch.Tensor]]
Stream = Callable[
    [list[torch.Tensor], torch.Generator, int], Iterable[tuple[torch.Tensor, torch.Tensor]]
]


@dataclass
class Feed:
    """A training set as :func:`fit` reads it.

    Attributes:
        n: number of training examples (rows the indices refer to).
        stream: ``stream(batches, generator, epoch_seed)`` yields ``(idx [b], x)`` per index
            batch, ``x`` the model's input on the CPU (augmented with ``generator`` when the task
            augments).
        batcher: ``batcher(n, batch_size, generator)`` gives an epoch's index batches, exactly
            ``ceil(n / batch_size)`` of them; ``None``: a random permutation cut in order.
    """

    n: int
    stream: Stream
    batcher: Batcher | None = None


@dataclass
class TrainingSet:
    """What a task gives the training stages (``pipeline.tasks``, ``training_set``).

    Attributes:
        feed: the training examples as :func:`fit` reads them.
        inputs: the raw training inputs, indexed like the feed (images, padded sequences).
        targets: ``targets(idx [b]) -> [rows]`` int64 class targets of a batch, on the device,
            in the order of the model's logit rows.
        info: the model's metadata (what ``build_model``/``load_model`` need: K, channels...).
        fp_inputs: fingerprints of the inputs (they decide whether a checkpoint is resumed).
        data_sha256: checksum of the training split.
        val: the task's validation data.
        about: one line for the log.
        data_dir: the prepared data it was read from.
    """

    feed: Feed
    inputs: object
    targets: Callable[[torch.Tensor], torch.Tensor]
    info: dict
    fp_inputs: dict
    data_sha256: str
    val: object
    about: str
    data_dir: Path


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + epoch * 7_919) % (2**62)


@dataclass
class _Sums:
    """The running sums of one epoch (kept in a checkpoint written inside it)."""

    total: float = 0.0  # sum of the valued steps' loss x examples
    count: int = 0  # examples trained on
    rows: int = 0  # loss rows (images, target tokens), global
    valued: int = 0  # examples of the steps whose loss value was computed
    value: float | None = None  # the last loss value
    board: int = 0  # the next step logged to TensorBoard

    def state(self, samples: int, seconds: float) -> dict:
        """What a checkpoint inside the epoch keeps (with the samples seen and the seconds)."""
        return {**asdict(self), "samples": samples, "seconds": seconds}


class _Run:
    """One call of :func:`fit`: the set-up, then :meth:`epoch` per epoch, each calling
    :meth:`step` per training step; :meth:`end_epoch` validates, logs and checkpoints."""

    def __init__(self, model, feed, loss_fn, cfg, seed, ckpt, eval_fn, device, log, curve_fn):
        self.model, self.feed, self.loss_fn, self.cfg = model, feed, loss_fn, cfg
        self.seed, self.eval_fn, self.device, self.log = seed, eval_fn, device, log
        self.curve_fn = curve_fn
        self.epochs, self.bs = int(cfg["epochs"]), int(cfg["batch_size"])
        self.steps = math.ceil(feed.n / self.bs)
        model.to(device)
        self.opt = make_optimizer(model, cfg)
        self.sched = make_scheduler(self.opt, cfg, self.steps)
        self.ckpt = ckpt
        where = ckpt.resume(model, self.opt, self.sched, self.steps, self.epochs)
        self.start, self.skip, self.partial = where.epoch, where.step, where.partial
        self.history, self.points = where.history, where.curve
        self.world = D.world()
        self.every_s = checkpoint_seconds()
        if self.world.size > 1 or device.type not in ("cpu", "cuda"):
            self.every_s = (
                0.0  # inside an epoch: one process, whose dropout generator it can restore
            )
        self.net = D.data_parallel(model, device)  # ``model`` itself for one process
        self.stop_after = os.environ.get(STOP_AFTER_ENV)
        self.use_amp = amp_enabled(device, cfg)
        self.grad_clip = setting(cfg, "grad_clip")
        self.value_every = int(setting(cfg, "loss_value_every"))
        resumed = self.start or self.skip
        self.board = tensorboard_writer(self.start * self.steps + self.skip + 1 if resumed else 0)
        every = int(setting(cfg, "curve_every") or 0)
        self.curve_every = every if curve_fn is not None else 0
        self.samples = int(self.points[-1]["samples"]) if self.points else 0
        if self.partial is not None:
            self.samples = int(self.partial["samples"])
        self.board_every = max(1, self.steps // 100)  # at most ~100 step points per epoch

    def run(self) -> list[dict]:
        try:
            if self.curve_every and self.start == 0 and self.skip == 0:
                self.point(0, 0)
            for epoch in range(self.start, self.epochs):
                self.epoch(epoch)
        finally:
            D.unwrap(self.net)
            if self.board is not None:
                self.board.close()
        return self.history

    def point(self, epoch: int, global_step: int) -> None:
        """A learning-curve point (rank 0 records the curve)."""
        if not self.world.main:
            return
        self.model.eval()
        with torch.no_grad(), D.alone():
            row = {
                "step": global_step,
                "epoch": epoch,
                "samples": self.samples,
                **self.curve_fn(self.model),
            }
        self.model.train()
        self.points.append(row)
        if self.board is not None:
            for key, value in row.items():
                if key not in ("step", "epoch", "samples") and math.isfinite(value):
                    self.board.add_scalar(f"curve/{key}", value, global_step)

    def batches(self, g: torch.Generator) -> list[torch.Tensor]:
        """The epoch's index batches, drawn from ``g``."""
        if self.feed.batcher is None:
            perm = torch.randperm(self.feed.n, generator=g)
            return [perm[i * self.bs : (i + 1) * self.bs] for i in range(self.steps)]
        batches = self.feed.batcher(self.feed.n, self.bs, g)
        if len(batches) != self.steps:
            raise ValueError(f"batcher gave {len(batches)} batches, expected {self.steps}")
        return batches

    def epoch(self, epoch: int) -> None:
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        torch.manual_seed(_epoch_seed(self.seed, epoch) + 1 + D.seed_offset())
        self.net.train()
        batches = self.batches(g)
        sums = _Sums(board=self.board_every - 1)
        replay = self.skip if epoch == self.start else 0  # steps done before the checkpoint
        if replay:
            sums = _Sums(**{k: self.partial[k] for k in asdict(sums)})
            t0 -= self.partial["seconds"]
        progress = Progress(
            self.feed.n,
            f"{JOB.name} epoch {epoch + 1}/{self.epochs}",
            log=self.log,
            info={
                "epoch": epoch + 1,
                "epochs": self.epochs,
                "steps": self.steps,
                "epoch_seconds": self.history[-1]["seconds"] if self.history else None,
            },
            done=sums.count,
        )
        saved = time.perf_counter()
        shares = [D.shard(b) for b in batches]  # each rank's part of every global batch
        stream = self.feed.stream(shares, g, _epoch_seed(self.seed, epoch))
        for step, (idx, x) in enumerate(stream):
            if step < replay:  # trained before the checkpoint: only the stream moves on
                continue
            if step == replay and replay:  # the dropout draws continue where they stopped
                torch.set_rng_state(self.partial["cpu_rng"])
                if "cuda_rng" in self.partial:
                    torch.cuda.set_rng_state(self.partial["cuda_rng"], self.device)
            D.kill_hook(epoch, step)  # testing: a rank killed here (PROXY_END2_KILL_AT)
            self.step(epoch, step, idx, x, len(batches[step]), sums, progress)
            if (
                self.every_s
                and step < self.steps - 1
                and time.perf_counter() - saved >= self.every_s
            ):
                if self.board is not None:
                    self.board.flush()  # a resumed job purges the events after this step
                state = sums.state(self.samples, time.perf_counter() - t0)
                self.save(epoch, step + 1, state)
                saved = time.perf_counter()
        self.end_epoch(epoch, t0, sums, progress)

    def step(self, epoch: int, step: int, idx, x, size: int, sums: _Sums, progress) -> None:
        """One training step on the global batch of ``size`` examples (this rank's ``idx``,
        ``x``); stops with :class:`Diverged` before a non-finite loss or gradient is applied."""
        x = x.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            logits = self.net(x)
        want_value = step % self.value_every == 0 or step == self.steps - 1
        with gradient_only(not want_value) as record:
            loss = self.loss_fn(logits.float(), idx, epoch + step / self.steps, x)
        rows = logits.shape[0]
        # a placeholder is NaN iff the gradient is not finite
        all_rows, check, placeholder = D.global_step_stats(
            rows, float(loss.detach()), record.placeholders > 0
        )
        if self.world.size > 1:  # DDP averages over ranks: weight by this rank's row share
            loss = loss * (rows * self.world.size / all_rows)
        if not math.isfinite(check):
            what = "the training loss gradient" if placeholder else "the training loss"
            raise Diverged(f"{what} is {check}", epoch, step, self.steps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.grad_clip))
            if not torch.isfinite(norm):
                raise Diverged(f"the gradient norm is {float(norm)}", epoch, step, self.steps)
        self.opt.step()
        self.sched.step()
        sums.count += size
        self.samples += size
        sums.rows += all_rows
        done = epoch * self.steps + step + 1
        if self.curve_every and (done % self.curve_every == 0 or step == self.steps - 1):
            self.point(epoch + 1, done)
        if not placeholder:
            sums.value = check
            sums.total += check * size
            sums.valued += size
        progress.update(size, sums.value)
        if self.board is not None and not placeholder and step >= sums.board:
            self.board.add_scalar("step/train_loss", sums.value, epoch * self.steps + step + 1)
            sums.board = step + self.board_every

    def end_epoch(self, epoch: int, t0: float, sums: _Sums, progress) -> None:
        """The epoch's history row (validation on rank 0), its log line and TensorBoard points,
        the checkpoint, and the testing hook's stop."""
        row = {
            "epoch": epoch + 1,
            "train_loss": sums.total / sums.valued,
            "lr": self.sched.get_last_lr()[0],
        }
        row["train_seconds"] = time.perf_counter() - t0  # the steps alone, before validation
        row["train_samples"] = sums.rows  # loss rows: images, target tokens
        if self.eval_fn is not None and self.world.main:
            self.model.eval()
            with torch.no_grad(), D.alone():
                row.update(self.eval_fn(self.model, epoch))
        dt = time.perf_counter() - t0
        row.update({"seconds": dt, "examples_per_s": sums.count / dt})
        self.history.append(row)
        progress.report(line=False)  # the record: this epoch done (the log has its line)
        self.log(
            " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        )
        if self.board is not None:  # every learning-curve quantity, against the global step
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float) and math.isfinite(value):
                    self.board.add_scalar(f"epoch/{key}", value, (epoch + 1) * self.steps)
            self.board.flush()
        if self.world.main:
            self.save(epoch + 1)
        D.barrier()  # no rank leaves (stops, fails) while rank 0 writes the checkpoint
        done = epoch + 1 - self.start
        if self.stop_after and done >= int(self.stop_after) and epoch + 1 < self.epochs:
            raise Interrupted(
                f"stopped after epoch {epoch + 1} ({STOP_AFTER_ENV}={self.stop_after})"
            )

    def save(self, epochs_done: int, steps_done: int = 0, sums: dict | None = None) -> None:
        self.ckpt.save(
            self.model,
            self.opt,
            self.sched,
            self.history,
            self.points,
            epochs_done,
            steps_done,
            sums,
            self.device,
        )


def fit(
    model: nn.Module,
    feed: Feed,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, float, torch.Tensor], torch.Tensor],
    cfg: dict,
    *,
    seed: int,
    ckpt_path: str | Path,
    fp: str,
    eval_fn: Callable[[nn.Module, int], dict] | None = None,
    device: torch.device = CPU,
    log: Callable[[str], None] = print,
    curve_fn: Callable[[nn.Module], dict] | None = None,
    curve: list[dict] | None = None,
) -> list[dict]:
    """Train ``model`` on ``feed`` for ``cfg["epochs"]`` epochs, resumably.

    ``loss_fn(logits, idx [b], progress, x)`` gives the batch loss (``idx`` indexes the training
    set, so targets can be looked up; ``progress`` = epoch + step / steps, the epochs done
    before this step, a float, so schedules such as EnD2's temperature move every step; ``x``
    is the model's input of this step on the device, exactly what the model saw: augmented
    images, packed pairs, so an online teacher runs on the same view);
    ``eval_fn(model, epoch)`` returns validation metrics.
    Returns the per-epoch history (also kept in the checkpoint).

    Data-parallel (more than one rank, :mod:`pipeline.distributed`): ``batch_size`` is the
    global batch; every rank takes its share of each global batch, the loss is weighted by the
    rank's share of the batch's loss rows (examples, tokens) so that DDP's gradient average is
    the global batch mean's gradient, and rank 0 alone validates, records the curve and writes
    the checkpoint; the history's ``train_loss`` and ``train_samples`` are global.

    Learning curve: with ``curve_fn`` and ``cfg["curve_every"]`` = N, ``curve_fn(model)`` (eval
    mode, no grad) is recorded before the first step, after every N-th step and after the last
    step of each epoch, as ``{"step", "epoch", "samples", **metrics}`` rows appended to
    ``curve`` (kept in the checkpoint too: a resumed run gives the same rows). It draws no
    random numbers, so training is the same with or without it.

    Checkpoints (``ckpt_path``, resumed only with the fingerprint ``fp``): after every epoch,
    and inside an epoch after the first step that ends :func:`pipeline.checkpoint.
    checkpoint_seconds` after the last write (one process on the CPU or a GPU). A run resumed
    inside an epoch replays that epoch's stream up to the step reached (``feed.stream`` must
    draw only from the generator it is given), restores the dropout generator and the epoch's
    running sums, and trains on from there: on the CPU its weights, history and curve are those
    of an uninterrupted run.
    """
    ckpt = Checkpoint(ckpt_path, fp, log)
    run = _Run(model, feed, loss_fn, cfg, seed, ckpt, eval_fn, device, log, curve_fn)
    history = run.run()
    if curve is not None:
        curve.extend(run.points)
    return history
