"""Stage ``aggregate`` (``rule aggregate``): every system's tidy metrics -> ``metrics_tidy.csv``,
the task's summary tables (mean ± std over seeds) in the formats of its
:class:`pipeline.tasks.TaskSpec`, and the jobs' resource table.

Run by hand (what the rule does)::

    python -m pipeline.stages.aggregate --task image --metrics results/default/eval/*/metrics.csv \
        --resources results/default/benchmarks/**/*.resources.json --root results/default \
        --out results/default/tables
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from pipeline import tasks
from pipeline.io import atomic_write_text, reported
from pipeline.tables import Table, read_tidy, resources_table


def write_table(table: Table, out_dir: Path, name: str, formats: tuple[str, ...]) -> None:
    """``name.<fmt>`` for each of ``formats`` (csv, md, tex)."""
    t, index = table.frame, table.index
    render = {
        "csv": lambda: t.to_csv(index=index),
        "md": lambda: t.to_markdown(index=index),
        "tex": lambda: t.to_latex(escape=True, index=index),
    }
    for fmt in formats:
        atomic_write_text(render[fmt](), out_dir / f"{name}.{fmt}")


def aggregate(
    task: str,
    metric_files: list[Path],
    out_dir: Path,
    histories: list[Path] | None = None,
    resources: list[Path] | None = None,
    root: Path | None = None,
) -> dict[str, Table]:
    """Write the tidy table of every system, the task's tables and ``resources.csv``."""
    impl, spec = tasks.load(task), tasks.spec(task)
    tidy = pd.concat([read_tidy(f) for f in metric_files], ignore_index=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(tidy.to_csv(index=False), out_dir / "metrics_tidy.csv")
    tables = impl.tables(tidy, histories)
    for name, formats in spec.tables.items():
        if name in tables:
            write_table(tables[name], out_dir, name, formats)
    atomic_write_text(
        resources_table(resources or [], root).to_csv(index=False, float_format="%.4g"),
        out_dir / "resources.csv",
    )
    return tables


def main() -> None:
    ap = argparse.ArgumentParser(description="Tables of every system (rule aggregate)")
    ap.add_argument("--task", required=True, choices=sorted(tasks.TASKS))
    ap.add_argument("--metrics", nargs="+", type=Path, required=True)
    ap.add_argument("--histories", nargs="*", type=Path, default=[])
    ap.add_argument("--resources", nargs="*", type=Path, default=[], help="*.resources.json")
    ap.add_argument("--root", type=Path, default=None, help="resource jobs are named from here")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    tables = aggregate(args.task, args.metrics, args.out, args.histories, args.resources, args.root)
    for name, t in tables.items():
        print(f"\n## {name}\n{t.frame.to_markdown(index=t.index)}")


if __name__ == "__main__":
    with reported():
        main()
