"""What every training stage (``train``, ``distill``) does around the engine: the task's
training set and seeded model, the resumable :func:`pipeline.engine.fit`, the artifacts it
leaves (weights with their metadata, ``history.csv``, the learning curve), and the stages'
shared command line. Below the stages: they import it, it imports no stage.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from pipeline import distributed as D
from pipeline import tasks
from pipeline.device import select_device, set_threads
from pipeline.engine import Diverged, Feed, Interrupted, TrainingSet, fit
from pipeline.io import atomic_path, fingerprint, reported, save_model
from pipeline.progress import add_arguments as add_progress_arguments
from pipeline.progress import job
from pipeline.resources import ResourceRecord

__all__ = [
    "CURVE_FILE",
    "count_parameters",
    "fit_and_save",
    "seeded_model",
    "start",
    "training_cli",
    "write_history",
]

CURVE_FILE = "curve.csv"
"""The learning curve beside a model's ``history.csv`` (rows of :func:`fit`'s ``curve_fn``)."""


def start(
    task: str, data_dir, cfg: dict, num_classes: int | None
) -> tuple[tasks.Task, torch.device, TrainingSet]:
    """What every training stage begins with: the task, the device, the training set."""
    impl = tasks.load(task)
    device = select_device(cfg.get("device", "auto"))
    return impl, device, impl.training_set(data_dir, cfg, num_classes, device)


def seeded_model(impl: tasks.Task, cfg: dict, ts: TrainingSet, seed: int) -> nn.Module:
    """The task's model for ``cfg["model"]``, initialised from ``seed``."""
    torch.manual_seed(seed)
    return impl.build_model(cfg["model"], ts.info)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def write_history(history: list[dict], path: str | Path) -> None:
    """Rows (dicts) as a CSV, atomically; the columns are every key, in order of appearance."""
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
    """:func:`pipeline.engine.fit` with the checkpoint fingerprint (config slice without the
    device, seed, ``fp_inputs``: the inputs' and the code's checksums), then the weights with
    ``meta`` + config + the code's checksum + history beside them, ``history.csv`` (and the
    learning curve :data:`CURVE_FILE` when ``curve_fn`` is given), and the checkpoint removed."""
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


def parser(description: str, extra_args=None) -> argparse.ArgumentParser:
    """The flags every training stage takes (and the stage's own, ``extra_args(parser)``)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--task", required=True, choices=sorted(tasks.TASKS))
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
    return ap


def training_cli(description: str, stage: str, run, extra_args=None) -> None:
    """Command line shared by the training stages: the common flags (:func:`parser`), the
    resource record, exit code 3 when a run stops early
    (:data:`pipeline.engine.STOP_AFTER_ENV`) and 4 when it diverges. ``run(args, cfg, log)``
    trains and returns the history."""
    args = parser(description, extra_args).parse_args()
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
