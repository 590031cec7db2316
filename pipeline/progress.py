"""Progress of a long loop, for a log file or SLURM's output: one plain line at most every
``every`` seconds (never a carriage return), formatted by tqdm (rate, elapsed, ETA), and
optionally a JSON progress record that ``python -m pipeline.status`` reads.

A line reads::

    train_member seed=0 epoch 2/5:  38% 7680/20000 ex [00:12<00:19, 640.00ex/s, loss=0.5312]

The record (``<results>/progress/<rule>/<job>.json``, written atomically) holds the same numbers
plus the wall-clock time of the update, the host and the process id.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

EVERY_ENV = "PROXY_END2_PROGRESS_EVERY"  # seconds between progress lines (default 30)
DEFAULT_EVERY = 30.0
BAR = (
    "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} {unit} "
    "[{elapsed}<{remaining}, {rate_fmt}{postfix}]"
)


@dataclass
class Job:
    """What the running job reports to (one job per process; set by the stage's command line
    with :func:`set_job`): its name, its progress record and its TensorBoard folder."""

    name: str = "job"
    record: Path | None = None
    tensorboard: Path | None = None


JOB = Job()


def set_job(name: str, record=None, tensorboard=None) -> Job:
    """Declare the process's job; its record starts as ``running`` (so ``pipeline.status`` sees
    a job that has not reached its first progress line yet)."""
    JOB.name = name  # updated in place: modules hold JOB from `from pipeline.progress import`
    JOB.record = Path(record) if record else None
    JOB.tensorboard = Path(tensorboard) if tensorboard else None
    finish_record(JOB.record, "running", fresh=True)
    return JOB


@contextlib.contextmanager
def job(name: str, record=None, tensorboard=None) -> Iterator[Job]:
    """Around a stage's work: declares the job (:func:`set_job`) and leaves its record ``done``,
    ``stopped`` (SIGTERM, as SLURM sends at a time limit or ``scancel``; an early stop) or
    ``failed`` with the error. SIGTERM becomes ``SystemExit(143)`` so this bookkeeping runs."""

    def terminated(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminated)
    before = (JOB.name, JOB.record, JOB.tensorboard)
    current = set_job(name, record, tensorboard)
    try:
        yield current
    except SystemExit as err:
        finish_record(current.record, "stopped" if err.code == 143 else "failed", exit=err.code)
        raise
    except BaseException as err:
        stopped = type(err).__name__ in ("Interrupted", "KeyboardInterrupt")
        finish_record(current.record, "stopped" if stopped else "failed", error=str(err)[-500:])
        raise
    else:
        finish_record(current.record, "done")
    finally:
        signal.signal(signal.SIGTERM, previous)
        JOB.name, JOB.record, JOB.tensorboard = before


def tensorboard_writer(purge_step: int):
    """The job's TensorBoard writer (``None`` without a TensorBoard folder). It drops the
    events an earlier attempt logged at ``purge_step`` and after: a resumed job passes the
    global step after its checkpoint's (those up to it stay), a fresh one 0 (all go)."""
    if JOB.tensorboard is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(JOB.tensorboard), purge_step=purge_step)


def add_arguments(ap) -> None:
    """The ``--progress`` and ``--tensorboard`` flags of a stage's command line."""
    ap.add_argument("--progress", type=Path, default=None, help="progress record (JSON) to keep")
    ap.add_argument("--tensorboard", type=Path, default=None, help="TensorBoard folder")


def record_for(log: str | Path) -> Path:
    """The progress record of the job whose log is ``log``:
    ``<run>/logs/<rule>/<job>.log`` -> ``<run>/progress/<rule>/<job>.json``."""
    log = Path(log)
    parts = list(log.parts)
    i = len(parts) - 1 - parts[::-1].index("logs")
    return Path(*parts[:i], "progress", *parts[i + 1 :]).with_suffix(".json")


def _write(record: dict, path: Path) -> None:
    from pipeline.io import atomic_write_text  # imports torch: not at module level (the DAG)

    atomic_write_text(json.dumps(record), path)


def every_seconds(default: float = DEFAULT_EVERY) -> float:
    """The progress interval: ``$PROXY_END2_PROGRESS_EVERY`` or ``default``."""
    value = os.environ.get(EVERY_ENV)
    return float(value) if value else default


class Progress:
    """Counts work done towards ``total`` and reports it at a bounded rate.

    Args:
        total: units of work in the loop (examples, tokens, batches...).
        desc: what the loop is (``"distill pd_end2 seed=0 epoch 3/20"``).
        unit: the unit's name (``"ex"``, ``"tok"``).
        log: where lines go (``print`` in the stages: the job's log).
        record: the JSON progress record to keep up to date (default: the job's, if any).
        every: seconds between lines and record updates (default :func:`every_seconds`).
        info: extra fields for the record (stage, epoch, epochs...).
        clock: the time source (tests pass a fake one).
        done: units already done before this loop started (a resumed epoch); they count
            towards ``total`` but not towards the rate.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "ex",
        log: Callable[[str], None] = print,
        record: str | Path | None = None,
        every: float | None = None,
        info: dict | None = None,
        clock: Callable[[], float] = time.monotonic,
        done: int = 0,
    ) -> None:
        self.total, self.desc, self.unit, self.log = int(total), desc, unit, log
        self.record = Path(record) if record else JOB.record
        self.every = every_seconds() if every is None else float(every)
        self.info, self.clock = dict(info or {}), clock
        self.n, self.initial, self.loss = int(done), int(done), None
        self.start = self.last = clock()
        self.lines = 0

    def update(self, n: int, loss: float | None = None) -> None:
        """``n`` more units done; ``loss`` the latest training loss (shown when given)."""
        self.n += int(n)
        if loss is not None:
            self.loss = float(loss)
        if self.clock() - self.last >= self.every:
            self.report()

    def report(self, line: bool = True) -> None:
        """Write a line (unless ``line`` is false) and the record now."""
        now = self.clock()
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        postfix = f"loss={self.loss:.4g}" if self.loss is not None else None
        if line:
            self.log(
                tqdm.format_meter(
                    self.n,
                    self.total,
                    elapsed,
                    prefix=self.desc,
                    unit=self.unit,
                    postfix=postfix,
                    bar_format=BAR,
                    initial=self.initial,
                )
            )
            self.lines += 1
        if self.record is not None:
            rate = (self.n - self.initial) / elapsed
            left = (self.total - self.n) / rate if rate > 0 else None
            rest = None  # the whole job: this epoch, then the epochs after it at the last pace
            if left is not None and self.info.get("epochs"):
                per_epoch = self.info.get("epoch_seconds") or self.total / rate
                rest = left + (self.info["epochs"] - self.info["epoch"]) * per_epoch
            _write(
                {
                    **self.info,
                    "state": "running",
                    "job": JOB.name,
                    "desc": self.desc,
                    "done": self.n,
                    "total": self.total,
                    "unit": self.unit,
                    "rate": rate,
                    "elapsed_s": elapsed,
                    "eta_s": left,
                    "job_eta_s": rest,
                    "loss": self.loss,
                    "updated": time.time(),
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                },
                self.record,
            )


def finish_record(record: str | Path | None, state: str, fresh: bool = False, **fields) -> None:
    """Set a job's progress record to ``state`` (``running``, ``done``, ``failed``,
    ``stopped``); ``fresh`` starts a new record instead of updating the last one."""
    if record is None:
        return
    path = Path(record)
    old = {}
    if path.is_file() and not fresh:
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
    now = {"updated": time.time(), "host": socket.gethostname(), "pid": os.getpid()}
    _write({**old, **fields, **now, "state": state}, path)
