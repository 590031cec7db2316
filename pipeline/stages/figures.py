"""Stage ``figures`` (``rule figures``): every figure of a task, drawn from files the evaluation
and the aggregation already wrote (passed explicitly, never found by globbing), so regenerating
them never touches training. Each figure is saved as PNG and PDF.

The task's spec lists its figures (:class:`pipeline.figure_registry.Figure`: name -> inputs ->
function); this stage knows none of them by name. Its command line has one flag per input kind
and option of :mod:`pipeline.figure_registry`, and each figure is drawn as
``fn(out, **its inputs, **its configured options)`` from the task's figures module.

Run by hand, e.g.: ``python -m pipeline.stages.figures --task image --out figs
--per-example results/default/eval/*/per_example.safetensors --tidy ... --histories ...
--shares ... --profile ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from pipeline import tasks
from pipeline.figure_registry import INPUTS, OPTIONS
from pipeline.io import reported
from pipeline.plotting import set_palette


def run_groups(task: str, given: dict) -> list[str]:
    """Every system group of the run: the ``group`` column of the input the task's spec names
    (``palette_from``: the sweep table, the tidy metrics)."""
    table = given.get(tasks.spec(task).palette_from)
    if table is None:
        return []
    return sorted(set(pd.read_csv(table, usecols=["group"])["group"].astype(str)))


def draw(task: str, out: Path, given: dict) -> list[Path]:
    """Every figure of ``task``'s registry, in order, from ``given`` (input kind or option ->
    files, a file or a value; an input not given is ``[]`` or ``None``, an option not given is
    left to the figure's default)."""
    impl = tasks.load(task)
    set_palette(run_groups(task, given))
    module = impl.figure_module()
    paths = []
    for figure in tasks.spec(task).figures:
        kwargs = {k: given.get(k, [] if INPUTS[k].many else None) for k in figure.inputs}
        kwargs |= {k: given[k] for k in figure.options if given.get(k) is not None}
        paths += getattr(module, figure.function)(out, **kwargs)
    return paths


def parser() -> argparse.ArgumentParser:
    """``--task``, ``--out``, one flag per input kind and one per option of the registry."""
    ap = argparse.ArgumentParser(description="Draw every figure of a run (rule figures)")
    ap.add_argument("--task", required=True, choices=sorted(tasks.TASKS))
    ap.add_argument("--out", required=True, type=Path)
    for name, kind in INPUTS.items():
        flag = "--" + name.replace("_", "-")
        if kind.many:
            ap.add_argument(flag, nargs="*", type=Path, default=[], help=kind.help)
        else:
            ap.add_argument(flag, type=Path, default=None, help=kind.help)
    for name, option in OPTIONS.items():
        where = f"config {option.section}.{option.key}"
        ap.add_argument(
            "--" + name.replace("_", "-"), type=option.type, help=f"{option.help} ({where})"
        )
    return ap


def main() -> None:
    args = parser().parse_args()
    given = {k: v for k, v in vars(args).items() if k not in ("task", "out")}
    for p in draw(args.task, args.out, given):
        print(p)


if __name__ == "__main__":
    with reported():
        main()
