"""Cached or online teacher: the same students trained both ways, side by side (issue 31).

Two image runs that differ only in ``teacher.mode`` (``config/augment.yaml`` and the same with
``config/augment_cache.yaml`` layered on top) are read from their stored per-example arrays
(``<run>/eval/<system>/per_example.safetensors``); for every system, on the test set:

* accuracy (``pred == label``), NLL (``-mean log_p_label``);
* agreement: the share of test images where its top class is the ensemble's (each run's own
  ensemble; the two runs' members are checked to have the same weights, so the ensembles are
  the same too).

Students are summarised per method group as mean ± std over seeds::

    python -m pipeline.compare_teachers results/augment results/augment_cache [--out table.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import load_file

from pipeline import methods
from pipeline.tables import fmt_mean_std

__all__ = ["compare", "system_scores"]


def system_scores(run: str | Path) -> pd.DataFrame:
    """One row per evaluated system of ``run``: ``system, group, seed, accuracy, nll,
    agreement`` (test set, from the stored arrays)."""
    run = Path(run)
    systems = sorted(p.parent.name for p in run.glob("eval/*/per_example.safetensors"))
    if "ensemble" not in systems:
        raise FileNotFoundError(f"{run}/eval/ensemble/per_example.safetensors: no ensemble")
    ensemble = load_file(str(run / "eval/ensemble/per_example.safetensors"))["test.pred"]
    rows = []
    for system in systems:
        a = load_file(str(run / "eval" / system / "per_example.safetensors"))
        group, seed = methods.parse_system(system)
        rows.append(
            {
                "system": system,
                "group": group,
                "seed": seed,
                "accuracy": float(np.mean(a["test.pred"] == a["test.label"])),
                "nll": float(-np.mean(a["test.log_p_label"].astype(np.float64))),
                "agreement": float(np.mean(a["test.pred"] == ensemble)),
            }
        )
    return pd.DataFrame(rows)


def _same_members(a: Path, b: Path) -> bool:
    """Whether two runs' members have the same weights (their files also hold the training
    history, with its seconds, so the files themselves differ between two runs)."""
    fa = sorted(a.glob("members/seed*/model.safetensors"))
    fb = sorted(b.glob("members/seed*/model.safetensors"))
    if not fa or [p.parent.name for p in fa] != [p.parent.name for p in fb]:
        return False
    for pa, pb in zip(fa, fb, strict=True):
        wa, wb = load_file(str(pa)), load_file(str(pb))
        if wa.keys() != wb.keys() or not all(np.array_equal(wa[k], wb[k]) for k in wa):
            return False
    return True


def compare(online: str | Path, cache: str | Path) -> pd.DataFrame:
    """The markdown-ready table: a row per group (members and students as mean ± std over
    seeds), the columns accuracy / NLL / agreement under each teacher. A ``ValueError`` when
    the runs' members differ (the comparison would not be of the teacher alone)."""
    online, cache = Path(online), Path(cache)
    if not _same_members(online, cache):
        raise ValueError(f"{online} and {cache} were not trained from the same members")
    parts = {}
    for name, run in (("online", online), ("cache", cache)):
        df = system_scores(run)
        cols = {}
        for group, g in df.groupby("group", sort=False):
            n = len(g)
            cols[group] = {
                f"{metric} ({name})": fmt_mean_std(g[metric].mean(), g[metric].std(ddof=1), n)
                for metric in ("accuracy", "nll", "agreement")
            }
        parts[name] = pd.DataFrame.from_dict(cols, orient="index")
    table = pd.concat([parts["online"], parts["cache"]], axis=1)
    table = table.loc[sorted(table.index, key=methods.order)]
    table.index = [methods.label(g) for g in table.index]
    cols = [f"{m} ({t})" for m in ("accuracy", "nll", "agreement") for t in ("online", "cache")]
    return table[cols]


def main() -> None:
    ap = argparse.ArgumentParser(description="Cached vs online teacher: students side by side")
    ap.add_argument("online", type=Path, help="the run whose students used the online teacher")
    ap.add_argument("cache", type=Path, help="the run whose students read the teacher cache")
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    a = ap.parse_args()
    text = compare(a.online, a.cache).to_markdown()
    print(text)
    if a.out is not None:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
