"""The token task's summary tables (``rule aggregate``): one block of rows per vocabulary size V,
mean ± std over seeds (:func:`pipeline.tables.summary_table`), the raw ``sweep`` statistics and
the training speed of each method against cross-entropy.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.tables import Table, mean_std, speed_table, summary_table

KEY_MEASURES = ("total", "knowledge", "seq_nll")  # the short OOD table (``ood_main``)
SHORT = {"total": "TU", "knowledge": "MI", "seq_nll": "−lnP/L"}


LABELS = {"accuracy": "Acc", "nll": "NLL", "perplexity": "PPL", "agreement": "Agree"}


def tables(tidy: pd.DataFrame, histories: list[Path] | None = None) -> dict[str, Table]:
    """``sweep`` (mean, std, n over seeds per V, group, split, metric, measure), the per-V
    tables ``main``, ``prr``, ``ood`` (every measure), ``ood_main`` (TU, MI and
    -(1/L) ln P(y|x) only) and, given the training histories, ``speed``
    (:func:`pipeline.tables.speed_table`)."""
    keys = ["vocab", "group", "split", "metric", "measure"]
    sweep = mean_std(tidy, keys)
    tidy = tidy.sort_values(keys, kind="stable")  # columns appear in the order of the sweep
    main_rows = tidy[(tidy["split"] == "test") & (tidy["metric"] != "prr")]
    prr_rows = tidy[tidy["metric"] == "prr"]
    ood_rows = tidy[tidy["metric"] == "ood_auroc"]
    key = ood_rows[ood_rows["measure"].isin(KEY_MEASURES)]
    out = {
        "sweep": Table(sweep, index=False),
        "main": summary_table(main_rows, main_rows["metric"].map(LABELS), by="vocab"),
        "prr": summary_table(prr_rows, "PRR " + prr_rows["measure"], by="vocab"),
        "ood": summary_table(
            ood_rows,
            ood_rows["split"].str.removeprefix("ood_") + " " + ood_rows["measure"],
            by="vocab",
        ),
        "ood_main": summary_table(
            key, key["split"].str.removeprefix("ood_") + " " + key["measure"].map(SHORT), by="vocab"
        ),
    }
    if histories:
        out["speed"] = Table(speed_table(histories).round(3), index=False)
    return out
