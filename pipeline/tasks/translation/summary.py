"""The translation task's summary tables (``rule aggregate``): one block of rows per target
vocabulary size V, mean ± std over seeds (:func:`pipeline.tables.summary_table`).

**Convergence criterion** (issue 30): the students of a V count as converged when plain KD
(EnD) comes within 0.5 BLEU of a single member on test, or agrees with the ensemble's top-1 on the
test reference tokens at least as well as a single member does (means over seeds / members).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.methods import label
from pipeline.tables import (
    Table,
    confidence_table,
    fmt_mean_std,
    mean_std,
    speed_table,
    summary_table,
)

LABELS = {
    "bleu": "BLEU",
    "chrf": "chrF",
    "nll": "NLL",
    "accuracy": "Acc",
    "agreement": "Agree",
}
__all__ = ["convergence", "tables"]

KEY_MEASURES = ("total", "knowledge", "seq_nll")
SHORT = {"total": "TU", "knowledge": "MI", "seq_nll": "−lnP/L"}
REFERENCE = "end"
BLEU_GAP = 0.5
"""EnD within this much BLEU of a single member counts as converged."""


def convergence(tidy: pd.DataFrame) -> pd.DataFrame:
    """Per V: test BLEU and agreement of a single member and of EnD, and the verdict."""
    test = tidy[tidy["split"] == "test"]
    stats = mean_std(test[test["metric"].isin(["bleu", "agreement"])], ["vocab", "group", "metric"])
    rows = []
    for vocab, g in stats.groupby("vocab"):
        g = g.set_index(["group", "metric"])
        row = {"V": int(vocab)}
        for grp in ("member", REFERENCE):
            for metric in ("bleu", "agreement"):
                if (grp, metric) in g.index:
                    name = f"{'single member' if grp == 'member' else label(grp)} {LABELS[metric]}"
                    row[name] = fmt_mean_std(*g.loc[(grp, metric), ["mean", "std", "count"]])
        if all((grp, m) in g.index for grp in ("member", REFERENCE) for m in ("bleu", "agreement")):
            bleu = g.loc[(REFERENCE, "bleu"), "mean"] - g.loc[("member", "bleu"), "mean"]
            agree = g.loc[(REFERENCE, "agreement"), "mean"] - g.loc[("member", "agreement"), "mean"]
            ok = bleu >= -BLEU_GAP or agree >= 0
            row["converged"] = f"{'yes' if ok else 'no'} (BLEU {bleu:+.2f}, agreement {agree:+.3f})"
        else:
            row["converged"] = "n/a (no EnD or member rows)"
        rows.append(row)
    return pd.DataFrame(rows)


def tables(tidy: pd.DataFrame, histories: list[Path] | None = None) -> dict[str, Table]:
    """``sweep`` (mean, std, n per V, group, split, metric, measure), ``convergence``,
    ``main`` (test quality), ``shift`` (quality on the unseen books), ``confidence`` (members
    and ensemble on the test references), ``prr``, ``ood`` (every measure), ``ood_main``
    and, given the histories, ``speed``."""
    keys = ["vocab", "group", "split", "metric", "measure"]
    sweep = mean_std(tidy, keys)
    tidy = tidy.sort_values(keys, kind="stable")
    quality = tidy[tidy["metric"].isin(list(LABELS))]
    main = quality[quality["split"] == "test"]
    shift = quality[quality["split"] == "shift"]
    prr = tidy[tidy["metric"] == "prr"]
    ood = tidy[tidy["metric"] == "ood_auroc"]
    key = ood[ood["measure"].isin(KEY_MEASURES)]
    out = {
        "sweep": Table(sweep, index=False),
        "convergence": Table(convergence(tidy), index=False),
        "main": summary_table(main, main["metric"].map(LABELS), by="vocab"),
        "shift": summary_table(shift, shift["metric"].map(LABELS), by="vocab"),
        "confidence": confidence_table(tidy),
        "prr": summary_table(prr, "PRR " + prr["measure"], by="vocab"),
        "ood": summary_table(
            ood, ood["split"].str.removeprefix("ood_") + " " + ood["measure"], by="vocab"
        ),
        "ood_main": summary_table(
            key, key["split"].str.removeprefix("ood_") + " " + key["measure"].map(SHORT), by="vocab"
        ),
    }
    if histories:
        out["speed"] = Table(speed_table(histories).round(3), index=False)
    return out
