"""Stage ``evaluate`` (``rule evaluate``, one job per system): the task's metrics of one system,
written as tidy rows (``metrics.csv``) and per-example arrays, so anyone can recompute every
number.

Systems: ``member-<seed>`` (one ensemble member), ``ensemble`` (members and the ensemble are
read from the teacher artifact: no member is re-run), ``<method>-seed<seed>`` (a student, run
over the prepared splits). ``metrics.csv`` has the columns ``system, group, seed``, the task's
key columns (``vocab`` for a class-count sweep), then the task's metric columns.

Run by hand (what the rule does)::

    python -m pipeline.stages.evaluate --task image --system pd_end2-seed0 \
        --data results/default/data --teacher results/default/teacher \
        --model results/default/students/pd_end2/seed0/model.safetensors \
        --out results/default/eval/pd_end2-seed0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from pipeline import distributed as D
from pipeline import methods, tasks
from pipeline.device import select_device, set_threads
from pipeline.io import ArtifactError, atomic_save, atomic_write_text, read_json, reported
from pipeline.progress import add_arguments as add_progress_arguments
from pipeline.progress import job
from pipeline.resources import ResourceRecord


def evaluate(
    task: str,
    system: str,
    data_dir: Path,
    teacher_dir: Path,
    out_dir: Path,
    model_path: Path | None = None,
    cfg: dict | None = None,
    num_classes: int | None = None,
    device: torch.device | None = None,
) -> pd.DataFrame:
    """Evaluate ``system``; writes ``metrics.csv`` and the task's per-example arrays into
    ``out_dir`` and returns the metrics table."""
    impl, spec = tasks.load(task), tasks.spec(task)
    group, seed = methods.parse_system(system)
    model = meta = None
    if group not in ("member", "ensemble"):
        if model_path is None:
            raise ValueError(f"system {system!r} is a student: give its weights (--model)")
        model, meta = impl.load_model(model_path)
        held = meta.get("group", meta.get("method"))  # a variant's group, else its method
        if held != group:
            raise ArtifactError(model_path, f"holds a {held} student, not {group}")
        methods.get(meta["method"])
        teacher = read_json(Path(teacher_dir) / "manifest.json", "cache_teacher")
        if meta.get("teacher_member_sha256") != teacher.get("member_sha256"):
            raise ArtifactError(
                model_path,
                f"was distilled from other members than the teacher cache {teacher_dir} holds",
                "distill",
            )
    rows, arrays, keys = impl.evaluate_system(
        group, seed, data_dir, teacher_dir, model, meta, cfg or {}, num_classes, device
    )
    table = pd.DataFrame(rows)
    seed_value = -1 if seed is None else seed
    for i, (name, value) in enumerate(
        {"system": system, "group": group, "seed": seed_value, **keys}.items()
    ):
        table.insert(i, name, value)
    if D.world().main:  # rank 0 writes a data-parallel job's results
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_save(arrays, out_dir / spec.arrays)
        atomic_write_text(table.to_csv(index=False), out_dir / "metrics.csv")
    # examples (sequences) scored, for the resource record
    table.attrs["samples"] = sum(v.shape[0] for k, v in arrays.items() if k.endswith(".total"))
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description="Evaluate one system (rule evaluate)")
    ap.add_argument("--task", required=True, choices=sorted(tasks.TASKS))
    ap.add_argument("--system", required=True)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--teacher", required=True, type=Path)
    ap.add_argument("--num-classes", type=int, default=None, help="K, where the task sweeps it")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--config-json", default="{}", help="the evaluation config slice")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--resources-json", type=Path, default=None)
    add_progress_arguments(ap)
    args = ap.parse_args()
    set_threads(args.threads)
    device = D.init(select_device(args.device))  # joins the job's ranks, if it has several
    main = D.world().main
    if not (main or tasks.spec(args.task).shared_prediction):
        D.close()  # this task is evaluated by rank 0 alone
        return
    name = f"evaluate {args.system}" + (f" V={args.num_classes}" if args.num_classes else "")
    with (
        reported(),
        job(name, args.progress if main else None),
        ResourceRecord(args.resources_json if main else None, "evaluate", device) as rec,
    ):
        table = evaluate(
            args.task,
            args.system,
            args.data,
            args.teacher,
            args.out,
            args.model,
            json.loads(args.config_json),
            args.num_classes,
            device,
        )
        rec.samples = table.attrs["samples"]
    D.close()
    if main:
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
