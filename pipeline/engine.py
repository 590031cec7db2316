"""The training engine: one deterministic, resumable loop shared by every member and student of
every task, its optimisers and schedules, and the command line of the training stages.

Determinism: epoch ``e`` draws its shuffling, augmentation and dropout from generators seeded by
``(seed, e)``, so a run resumed from a checkpoint is bit-identical on the CPU to an
uninterrupted one. The checkpoint (model, optimizer, scheduler, history) is written atomically
after every epoch and, within an epoch, after the first step that ends
:data:`CHECKPOINT_MINUTES` after the last write (with the step reached, the dropout generator's
state and the epoch's running sums; the resumed epoch replays its batch stream up to that step
without training on it). It lives outside the rule's declared outputs and is only reused when
its fingerprint (config slice + inputs + seed) matches.

A task hands its training set to :func:`fit` as a :class:`Feed`: how many examples there are, how
an epoch's index batches are drawn, and how a batch of indices becomes the model's input.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline import distributed as D
from pipeline.io import atomic_path, atomic_torch_save, fingerprint, reported, save_model
from pipeline.maths.values import gradient_only
from pipeline.progress import JOB, Progress, job
from pipeline.progress import add_arguments as add_progress_arguments
from pipeline.resources import ResourceRecord

CPU = torch.device("cpu")
LOSS_VALUE_EVERY = 10
"""Default of ``loss_value_every``: a distillation loss computes its value (float64, for the
logs and ``train_loss``) on the first step of an epoch, every this many steps and the last; the
other steps take its float32 gradient alone (:mod:`pipeline.maths.values`). Cross-entropy always
has its value."""
CURVE_FILE = "curve.csv"
"""The learning curve beside a model's ``history.csv`` (rows of :func:`fit`'s ``curve_fn``)."""
CHECKPOINT_MINUTES = 10.0
"""Default minutes of training between two checkpoints inside an epoch (one process on the CPU
or one GPU; a data-parallel job checkpoints after each epoch only). The environment variable
:data:`CHECKPOINT_MINUTES_ENV` sets it for a job; 0 checkpoints after each epoch only. Not part
of any config slice: changing it retrains nothing and leaves every result the same."""
CHECKPOINT_MINUTES_ENV = "PROXY_END2_CHECKPOINT_MINUTES"
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


def _read_checkpoint(path: Path, log: Callable[[str], None]) -> dict | None:
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
    if n:
        torch.set_num_threads(int(n))


def make_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    name = cfg.get("optimizer", "adamw")
    lr, wd = float(cfg["lr"]), float(cfg.get("weight_decay", 0.0))
    betas = tuple(cfg.get("betas", (0.9, 0.999)))
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd, betas=betas)
    if name == "adam":
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


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + epoch * 7_919) % (2**62)


def fit(
    model: nn.Module,
    feed: Feed,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
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

    ``loss_fn(logits, idx [b], progress)`` gives the batch loss (``idx`` indexes the training
    set, so targets can be looked up; ``progress`` = epoch + step / steps, the epochs done
    before this step, a float, so schedules such as EnD2's temperature move every step);
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

    Checkpoints: after every epoch, and inside an epoch after the first step that ends
    :func:`checkpoint_seconds` after the last write (one process on the CPU or a GPU). A run
    resumed inside an epoch replays that epoch's stream up to the step reached (``feed.stream``
    must draw only from the generator it is given), restores the dropout generator and the
    epoch's running sums, and trains on from there: on the CPU its weights, history and curve
    are those of an uninterrupted run.
    """
    epochs, bs = int(cfg["epochs"]), int(cfg["batch_size"])
    n = feed.n
    steps = math.ceil(n / bs)
    model.to(device)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, steps)
    history: list[dict] = []
    points: list[dict] = []
    start, skip, partial = 0, 0, None  # epochs done; steps done in epoch ``start`` (sums)
    ckpt_path = Path(ckpt_path)
    state = _read_checkpoint(ckpt_path, log)
    if state is not None:
        at = int(state.get("step", 0))
        if state.get("fingerprint") == fp and 0 <= at < steps:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            history, start = state["history"], int(state["epoch"])
            points = list(state.get("curve", []))
            skip, partial = (at, state["partial"]) if at else (0, None)
            where = (
                f"at step {skip}/{steps} of epoch {start + 1}/{epochs}"
                if skip
                else f"after epoch {start}/{epochs}"
            )
            log(f"resuming from {ckpt_path} {where}")
        else:
            log(f"ignoring stale checkpoint {ckpt_path} (config, code, data or seed changed)")
    world = D.world()
    every_s = checkpoint_seconds()
    if world.size > 1 or device.type not in ("cpu", "cuda"):
        every_s = 0.0  # inside an epoch: one process, whose dropout generator it can restore
    net = D.data_parallel(model, device)  # ``model`` itself for one process
    stop_after = os.environ.get(STOP_AFTER_ENV)
    use_amp = amp_enabled(device, cfg)
    grad_clip = cfg.get("grad_clip")
    value_every = int(cfg.get("loss_value_every", LOSS_VALUE_EVERY))
    board = _board(start * steps + skip + 1 if start or skip else 0)
    curve_every = int(cfg.get("curve_every") or 0) if curve_fn is not None else 0
    samples = int(points[-1]["samples"]) if points else 0
    if partial is not None:
        samples = int(partial["samples"])

    def save(epochs_done: int, steps_done: int = 0, sums: dict | None = None) -> None:
        """The checkpoint: after ``epochs_done`` epochs and ``steps_done`` steps of the next
        (with that epoch's running ``sums`` and the dropout generator's state)."""
        state = {
            "fingerprint": fp,
            "epoch": epochs_done,
            "step": steps_done,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "history": history,
            "curve": points,
        }
        if steps_done:
            rng = {"cpu_rng": torch.get_rng_state()}
            if device.type == "cuda":
                rng["cuda_rng"] = torch.cuda.get_rng_state(device)
            state["partial"] = {**sums, **rng}
        atomic_torch_save(state, ckpt_path)

    def point(epoch: int, global_step: int) -> None:
        if not world.main:  # rank 0 records the curve
            return
        model.eval()
        with torch.no_grad(), D.alone():
            row = {"step": global_step, "epoch": epoch, "samples": samples, **curve_fn(model)}
        model.train()
        points.append(row)
        if board is not None:
            for key, value in row.items():
                if key not in ("step", "epoch", "samples") and math.isfinite(value):
                    board.add_scalar(f"curve/{key}", value, global_step)

    try:
        if curve_every and start == 0 and skip == 0:
            point(0, 0)
        board_every = max(1, steps // 100)  # at most ~100 step points per epoch
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            g = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
            torch.manual_seed(_epoch_seed(seed, epoch) + 1 + D.seed_offset())
            net.train()
            if feed.batcher is None:
                perm = torch.randperm(n, generator=g)
                batches = [perm[i * bs : (i + 1) * bs] for i in range(steps)]
            else:
                batches = feed.batcher(n, bs, g)
                if len(batches) != steps:
                    raise ValueError(f"batcher gave {len(batches)} batches, expected {steps}")
            total, count, rows_done = 0.0, 0, 0
            valued, value, next_board = 0, None, board_every - 1
            replay = skip if epoch == start else 0  # steps done before the checkpoint
            if replay:
                total, count, rows_done = partial["total"], partial["count"], partial["rows"]
                valued, value, next_board = partial["valued"], partial["value"], partial["board"]
                t0 -= partial["seconds"]
            progress = Progress(
                n,
                f"{JOB.name} epoch {epoch + 1}/{epochs}",
                log=log,
                info={
                    "epoch": epoch + 1,
                    "epochs": epochs,
                    "steps": steps,
                    "epoch_seconds": history[-1]["seconds"] if history else None,
                },
                done=count,
            )
            saved = time.perf_counter()
            shares = [D.shard(b) for b in batches]  # each rank's part of every global batch
            for step, (idx, x) in enumerate(feed.stream(shares, g, _epoch_seed(seed, epoch))):
                if step < replay:  # trained before the checkpoint: only the stream moves on
                    continue
                if step == replay and replay:  # the dropout draws continue where they stopped
                    torch.set_rng_state(partial["cpu_rng"])
                    if "cuda_rng" in partial:
                        torch.cuda.set_rng_state(partial["cuda_rng"], device)
                D.kill_hook(epoch, step)
                x = x.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    logits = net(x)
                want_value = step % value_every == 0 or step == steps - 1
                with gradient_only(not want_value) as record:
                    loss = loss_fn(logits.float(), idx, epoch + step / steps)
                rows = logits.shape[0]
                # a placeholder is NaN iff the gradient is not finite
                all_rows, check, placeholder = D.global_step_stats(
                    rows, float(loss.detach()), record.placeholders > 0
                )
                if world.size > 1:  # DDP averages over ranks: weight by this rank's row share
                    loss = loss * (rows * world.size / all_rows)
                if not math.isfinite(check):
                    what = "the training loss gradient" if placeholder else "the training loss"
                    raise Diverged(f"{what} is {check}", epoch, step, steps)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip:
                    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float(grad_clip))
                    if not torch.isfinite(norm):
                        raise Diverged(f"the gradient norm is {float(norm)}", epoch, step, steps)
                opt.step()
                sched.step()
                count += len(batches[step])
                samples += len(batches[step])
                rows_done += all_rows
                done = epoch * steps + step + 1
                if curve_every and (done % curve_every == 0 or step == steps - 1):
                    point(epoch + 1, done)
                if not placeholder:
                    value = check
                    total += value * len(batches[step])
                    valued += len(batches[step])
                progress.update(len(batches[step]), value)
                if board is not None and not placeholder and step >= next_board:
                    board.add_scalar("step/train_loss", value, epoch * steps + step + 1)
                    next_board = step + board_every
                if every_s and step < steps - 1 and time.perf_counter() - saved >= every_s:
                    if board is not None:
                        board.flush()  # a resumed job purges the events after this step
                    sums = {"total": total, "count": count, "rows": rows_done, "valued": valued}
                    sums.update(value=value, board=next_board, samples=samples)
                    save(epoch, step + 1, {**sums, "seconds": time.perf_counter() - t0})
                    saved = time.perf_counter()
            row = {"epoch": epoch + 1, "train_loss": total / valued, "lr": sched.get_last_lr()[0]}
            row["train_seconds"] = time.perf_counter() - t0  # the steps alone, before validation
            row["train_samples"] = rows_done  # loss rows: images, target tokens
            if eval_fn is not None and world.main:
                model.eval()
                with torch.no_grad(), D.alone():
                    row.update(eval_fn(model, epoch))
            dt = time.perf_counter() - t0
            row.update({"seconds": dt, "examples_per_s": count / dt})
            history.append(row)
            progress.report(line=False)  # the record: this epoch done (the log has its line)
            log(
                " ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                )
            )
            if board is not None:  # every learning-curve quantity, against the global step
                for key, value in row.items():
                    if key != "epoch" and isinstance(value, int | float) and math.isfinite(value):
                        board.add_scalar(f"epoch/{key}", value, (epoch + 1) * steps)
                board.flush()
            if world.main:
                save(epoch + 1)
            D.barrier()  # no rank leaves (stops, fails) while rank 0 writes the checkpoint
            if stop_after and epoch + 1 - start >= int(stop_after) and epoch + 1 < epochs:
                raise Interrupted(
                    f"stopped after epoch {epoch + 1} ({STOP_AFTER_ENV}={stop_after})"
                )
    finally:
        D.unwrap(net)
        if board is not None:
            board.close()
    if curve is not None:
        curve.extend(points)
    return history


def _board(purge_step: int):
    """The job's TensorBoard writer (``None`` without a TensorBoard folder). It drops the
    events an earlier attempt logged at ``purge_step`` and after: a resumed job passes the
    global step after its checkpoint's (those up to it stay), a fresh one 0 (all go)."""
    if JOB.tensorboard is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(JOB.tensorboard), purge_step=purge_step)


def write_history(history: list[dict], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)


def fit_and_save(
    model: nn.Module,
    feed: Feed,
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
    curve_fn: Callable[[nn.Module], dict] | None = None,
) -> list[dict]:
    """What every training stage does around :func:`fit`: the checkpoint fingerprint (config
    slice without the device, seed, ``fp_inputs``: the inputs' and the code's checksums), the
    resumable fit, then the weights with ``meta`` + config + the code's checksum + history beside
    them, ``history.csv`` (and the learning curve :data:`CURVE_FILE` when ``curve_fn`` is given),
    and the checkpoint removed."""
    cfg_fp = {k: v for k, v in cfg.items() if k != "device"}  # resuming on another device is fine
    fp = fingerprint({"cfg": cfg_fp, "seed": seed, **fp_inputs})
    points: list[dict] = []
    history = fit(
        model,
        feed,
        loss_fn,
        cfg,
        seed=seed,
        ckpt_path=ckpt,
        fp=fp,
        eval_fn=eval_fn,
        device=device,
        log=log,
        curve_fn=curve_fn,
        curve=points,
    )
    if not D.world().main:  # rank 0 writes the job's artifacts
        return history
    meta = {**meta, "seed": seed, "config": cfg, "code_sha256": fp_inputs.get("code")}
    save_model(model.cpu(), out, {**meta, "history": history})
    write_history(history, Path(out).with_name("history.csv"))
    if curve_fn is not None:
        write_history(points, Path(out).with_name(CURVE_FILE))
    Path(ckpt).unlink(missing_ok=True)  # a finished job leaves no checkpoint to resume
    return history


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def training_cli(description: str, stage: str, run, extra_args=None) -> None:
    """Command line shared by the training stages (``train``, ``distill``): the common flags,
    the resource record, and exit code 3 when a run stops early (:data:`STOP_AFTER_ENV`).
    ``run(args, cfg, log)`` trains and returns the history."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--task", required=True, help="image | text (pipeline.tasks)")
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--num-classes", type=int, default=None, help="K, where the task sweeps it")
    ap.add_argument("--seed", required=True, type=int)
    ap.add_argument("--config-json", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--ckpt", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--resources-json", type=Path, default=None, help="resource record to write")
    add_progress_arguments(ap)
    if extra_args:
        extra_args(ap)
    args = ap.parse_args()
    set_threads(args.threads)
    device = D.init(select_device(args.device))  # joins the job's ranks, if it has several
    main = D.world().main  # rank 0 alone logs and writes the records
    cfg = {**json.loads(args.config_json), "device": args.device}
    name = " ".join(
        [stage, *([cfg["method"]] if "method" in cfg else []), f"seed={args.seed}"]
        + ([f"V={args.num_classes}"] if args.num_classes else [])
    )
    try:
        with (
            reported(),
            job(name, *((args.progress, args.tensorboard) if main else (None, None))),
            ResourceRecord(args.resources_json if main else None, stage, device) as rec,
        ):
            history = run(args, cfg, D.main_only(lambda s: print(s, flush=True)))
            rec.samples = int(sum(h.get("train_samples", 0) for h in history))
        D.close()
    except Interrupted as err:
        print(err, flush=True)
        sys.exit(3)
    except Diverged as err:
        print(err, file=sys.stderr, flush=True)
        sys.exit(4)
