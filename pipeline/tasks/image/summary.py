"""The image task's summary tables (``rule aggregate``): rows = systems, columns = metrics,
mean ± std over seeds (:func:`pipeline.tables.summary_table`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.tables import Table, summary_table

LABELS = {"accuracy": "Acc", "nll": "NLL", "brier": "Brier", "ece": "ECE"}


def tables(tidy: pd.DataFrame, histories: list[Path] | None = None) -> dict[str, Table]:
    """``main`` (test accuracy, NLL, Brier, ECE), ``prr`` (per score), ``ood`` (ROC-AUC per OOD
    set and score; corrupted test images at the highest severity), ``shift`` (accuracy and ECE
    per severity) and ``shift_sets`` (labelled shift sets). ``histories`` are not used."""
    main_rows = tidy[(tidy["split"] == "test") & (tidy["metric"] != "prr")]
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
    }
