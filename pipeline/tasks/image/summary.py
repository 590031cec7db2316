"""The image task's summary tables (``rule aggregate``): rows = systems, columns = metrics,
mean ± std over seeds (:func:`pipeline.tables.summary_table`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.methods import label, order
from pipeline.tables import Table, fmt_mean_std, mean_std, summary_table

LABELS = {"accuracy": "Acc", "nll": "NLL", "brier": "Brier", "ece": "ECE"}


def diversity(tidy: pd.DataFrame) -> Table:
    """Sets down (test, each OOD set, the shift set per severity, labelled shift sets); across,
    the members' mean pairwise disagreement and the mean RMI of the ensemble and of every system
    whose RMI is not identically 0 (Dirichlet students), mean ± std over seeds."""
    rows = tidy[tidy["metric"].isin(["disagreement", "mean_rmi"])]
    if not len(rows):
        return Table(pd.DataFrame({"note": ["this run recorded no diversity metrics"]}))
    rows = rows.assign(
        set=np.where(
            rows["split"] == "shift",
            "shift s" + rows["severity"].astype(str),
            rows["split"].str.removeprefix("ood_"),
        )
    )
    g = mean_std(rows, ["set", "group", "metric"])
    g = g[
        (g["metric"] == "disagreement")
        | g.groupby(["group", "metric"])["mean"].transform(lambda v: (v.abs() > 0).any())
    ]
    g["column"] = np.where(
        g["metric"] == "disagreement",
        "members' pairwise disagreement",
        g["group"].map(label) + " mean RMI",
    )
    g["_o"] = [
        (0, 0) if m == "disagreement" else order(x)
        for m, x in zip(g["metric"], g["group"], strict=True)
    ]
    cols = list(dict.fromkeys(g.sort_values("_o", kind="stable")["column"]))
    g["text"] = [
        fmt_mean_std(m, s, n) for m, s, n in zip(g["mean"], g["std"], g["count"], strict=True)
    ]
    w = g.pivot_table(index="set", columns="column", values="text", aggfunc="first")
    sets = list(dict.fromkeys(rows["set"]))
    w = w.reindex(index=sets, columns=cols).fillna("–")
    w.index.name = None
    w.columns.name = None
    return Table(w)


def tables(tidy: pd.DataFrame, histories: list[Path] | None = None) -> dict[str, Table]:
    """``main`` (test accuracy, NLL, Brier, ECE), ``prr`` (per score), ``ood`` (ROC-AUC per OOD
    set and score; corrupted test images at the highest severity), ``shift`` (accuracy and ECE
    per severity), ``shift_sets`` (labelled shift sets) and ``diversity`` (:func:`diversity`).
    ``histories`` are not used."""
    main_rows = tidy[(tidy["split"] == "test") & tidy["metric"].isin(list(LABELS))]
    prr_rows = tidy[tidy["metric"] == "prr"]
    ood_rows = tidy[
        (tidy["metric"] == "ood_auroc")
        & ((tidy["split"] != "shift") | (tidy["severity"] == tidy["severity"].max()))
    ]
    sev = np.where(ood_rows["split"] == "shift", " s" + ood_rows["severity"].astype(str), "")
    shift_rows = tidy[
        (tidy["split"] == "shift")
        & (tidy["corruption"] == "all")
        & tidy["metric"].isin(["accuracy", "ece"])
    ]
    sets_rows = tidy[
        tidy["split"].str.startswith("shift_") & tidy["metric"].isin(["accuracy", "nll", "ece"])
    ]
    return {
        "main": summary_table(main_rows, main_rows["metric"].map(LABELS)),
        "prr": summary_table(prr_rows, "PRR " + prr_rows["measure"]),
        "ood": summary_table(
            ood_rows,
            ood_rows["split"].str.removeprefix("ood_") + sev + " AUROC " + ood_rows["measure"],
        ),
        "shift": summary_table(
            shift_rows, shift_rows["metric"] + " s" + shift_rows["severity"].astype(str)
        ),
        "shift_sets": summary_table(
            sets_rows,
            sets_rows["split"].str.removeprefix("shift_") + " " + sets_rows["metric"].map(LABELS),
        )
        if len(sets_rows)
        else Table(pd.DataFrame({"note": ["this experiment has no labelled shift sets"]})),
        "diversity": diversity(tidy),
    }
