"""Reporting helpers shared by every task: the tidy metrics format, mean ± std summaries over
seeds, the jobs' resource table and the training-speed table.

Tidy metrics (one CSV per evaluated system, ``metrics.csv``) have the columns ``system, group,
seed``, then the task's own key columns (``vocab`` for a class-count sweep), then ``split,
metric, measure, ..., value``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.methods import label, order

__all__ = [
    "Table",
    "fmt_mean_std",
    "read_tidy",
    "resources_table",
    "speed_table",
    "summary_table",
]

RESOURCE_COLUMNS = [
    "job",
    "stage",
    "wall_s",
    "device",
    "device_name",
    "threads",
    "peak_gpu_mem_mb",
    "peak_rss_mb",
    "samples",
    "samples_per_s",
]


@dataclass
class Table:
    """A summary table and how it is written: with its index (row labels) or without."""

    frame: pd.DataFrame
    index: bool = True


def fmt_mean_std(mean: float, std: float, n: int) -> str:
    """``mean ± std`` (3 decimals) over ``n`` seeds; the mean alone for one; ``–`` for NaN."""
    if np.isnan(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}"


def read_tidy(path: str | Path) -> pd.DataFrame:
    """A tidy metrics CSV: empty measure/corruption stay strings, values are floats (an
    undefined metric, e.g. PRR without errors, is NaN)."""
    t = pd.read_csv(path, keep_default_na=False)
    t["value"] = pd.to_numeric(t["value"].replace("", np.nan))
    return t


def mean_std(tidy: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``mean``, ``std`` (0 for one seed) and ``count`` of ``value`` per ``keys``."""
    g = tidy.groupby(keys)["value"].agg(["mean", "std", "count"]).reset_index()
    g["std"] = g["std"].fillna(0.0)
    return g


def summary_table(rows: pd.DataFrame, column: pd.Series, by: str | None = None) -> Table:
    """Systems down, ``column`` (a label per tidy row) across, ``mean ± std`` over seeds in the
    cells. Groups come in :func:`pipeline.methods.order`, columns in order of first
    appearance. ``by`` (e.g. ``vocab``) adds an outer key: one block of rows per value, written
    as a leading ``V`` column (the table then has no index)."""
    keys = ([by] if by else []) + ["group", "column"]
    g = mean_std(rows.assign(column=column), keys)
    g["text"] = [
        fmt_mean_std(m, s, n) for m, s, n in zip(g["mean"], g["std"], g["count"], strict=True)
    ]
    w = g.pivot_table(index=keys[:-1], columns="column", values="text", aggfunc="first")
    w = w.reset_index()
    w["_o"] = w["group"].map(lambda g: order(g)[0])
    w["_s"] = w["group"].map(lambda g: order(g)[1])
    w = w.sort_values(([by] if by else []) + ["_o", "_s"], kind="stable").drop(columns=["_o", "_s"])
    w["group"] = w["group"].map(label)
    cols = list(dict.fromkeys(column))
    if by:
        w = w.rename(columns={by: "V", "group": "system"})[["V", "system", *cols]]
        return Table(w.reset_index(drop=True), index=False)
    w = w.set_index("group")[cols]
    w.index.name = None
    return Table(w)


CONFIDENCE = {
    "top_prob": "mean top prob",
    "confident_share": "share top",
    "tail_log_mean": "mean ln π̄ tail",
}
"""The token and translation tasks' confidence metrics (members and ensemble on test tokens):
mean top probability, the share of tokens whose top class holds more than each level, and the
ensemble's mean ``ln pi_bar`` over the classes below its top one."""


def confidence_table(tidy: pd.DataFrame) -> Table:
    """The :data:`CONFIDENCE` rows of ``tidy`` per V (:func:`summary_table`), a column per
    metric and level (``share top >0.9``) in :data:`CONFIDENCE`'s order."""
    conf = tidy[tidy["metric"].isin(list(CONFIDENCE))]
    rank = conf["metric"].map(list(CONFIDENCE).index)
    conf = conf.assign(_r=rank).sort_values(["_r", "measure"], kind="stable")  # column order
    level = conf["measure"].map(lambda m: f" {m}" if m else "")
    table = summary_table(conf, conf["metric"].map(CONFIDENCE) + level, by="vocab")
    table.frame = table.frame.fillna("–")  # a member has no tail row
    return table


def confidence_side_by_side(tidies: dict[str, pd.DataFrame]) -> Table:
    """:func:`confidence_table` of each run in ``tidies`` (a label, e.g. its results folder,
    -> its tidy metrics; the members' and the ensemble's rows suffice), one block of rows per run
    under a leading ``run`` column, the columns of every run (``–`` where a run has none)."""
    if not tidies:
        raise ValueError("no run given")
    frames = []
    for name, tidy in tidies.items():
        t = confidence_table(tidy).frame
        if not len(t):
            raise ValueError(f"run {name!r} has no confidence metrics (members, ensemble)")
        frames.append(t.assign(run=name))
    out = pd.concat(frames, ignore_index=True).fillna("–")
    return Table(out[["run", *[c for c in out.columns if c != "run"]]], index=False)


def resources_table(records: list[Path], root: Path | None = None) -> pd.DataFrame:
    """One row per job's ``*.resources.json`` record; the job is named by the record's path
    relative to ``root`` without its ``benchmarks`` folder and suffix."""
    rows = []
    for path in sorted(map(Path, records)):
        rec = json.loads(path.read_text())
        rel = path.relative_to(root) if root is not None else path
        job = "/".join(p for p in rel.parts if p != "benchmarks").removesuffix(".resources.json")
        rows.append({"job": job, **rec})
    return pd.DataFrame(rows, columns=RESOURCE_COLUMNS)


def history_run(path: Path | str) -> tuple[int, str]:
    """``(V, method)`` of a token-task ``history.csv`` at ``.../V{vocab}/members/seed{s}/``
    (method ``cross_entropy``) or ``.../V{vocab}/students/{method}/seed{s}/``."""
    parts = Path(path).parts
    vdir = next(p for p in reversed(parts) if p.startswith("V") and p[1:].isdigit())
    i = parts.index(vdir)
    return int(vdir[1:]), "cross_entropy" if parts[i + 1] == "members" else parts[i + 2]


def speed_table(histories: list[Path]) -> pd.DataFrame:
    """Training throughput per V and method from the runs' ``history.csv`` (paths
    ``.../V{vocab}/members/...`` or ``.../V{vocab}/students/{method}/...``): training samples
    (target tokens) per second of the training steps alone (validation excluded), mean over
    runs, and the ratio to cross-entropy training of the same model (the members)."""
    rows = []
    for path in histories:
        vocab, method = history_run(path)
        h = pd.read_csv(path)
        rows.append(
            {
                "vocab": vocab,
                "method": method,
                "tokens_per_s": h["train_samples"].sum() / h["train_seconds"].sum(),
            }
        )
    t = pd.DataFrame(rows).groupby(["vocab", "method"])["tokens_per_s"].mean().reset_index()
    ce = t[t["method"] == "cross_entropy"].set_index("vocab")["tokens_per_s"]
    t["slowdown_vs_ce"] = ce.reindex(t["vocab"]).to_numpy() / t["tokens_per_s"]
    rank = [(-1, "") if m == "cross_entropy" else order(m) for m in t["method"]]
    t["_o"], t["_s"] = [r[0] for r in rank], [r[1] for r in rank]
    return t.sort_values(["vocab", "_o", "_s"], kind="stable").drop(columns=["_o", "_s"])
