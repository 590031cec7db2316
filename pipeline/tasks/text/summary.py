"""The token task's summary tables (``rule aggregate``): one block of rows per vocabulary size V,
mean ± std over seeds (:func:`pipeline.tables.summary_table`), the raw ``sweep`` statistics, the
convergence check and the training speed of each method against cross-entropy.

**Convergence criterion.** The students of a V count as converged when plain KD (EnD) agrees
with the ensemble's top-1 on the test tokens at least as well as a single member does (mean
over seeds against mean over members). A student group that falls short of a converged EnD is
then the method's shortfall, not the budget's.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.methods import label, order
from pipeline.tables import (
    CONFIDENCE,
    Table,
    confidence_table,
    fmt_mean_std,
    history_run,
    mean_std,
    speed_table,
    summary_table,
)

KEY_MEASURES = ("total", "knowledge", "seq_nll")  # the short OOD table (``ood_main``)
SHORT = {"total": "TU", "knowledge": "MI", "seq_nll": "−lnP/L"}


LABELS = {"accuracy": "Acc", "nll": "NLL", "perplexity": "PPL", "agreement": "Agree"}


REFERENCE = "end"
"""The group whose agreement decides convergence (plain KD)."""


def budgets(histories: list[Path]) -> dict[int, str]:
    """V -> the students' training budget there, from their ``history.csv`` (one row per
    epoch): ``"3 epochs, 1,936,437 tokens"``; budgets that differ between a V's students (not in a
    config of this pipeline: ``vocab_overrides`` sets one per V) are all listed, `` / ``-joined."""
    seen: dict[int, set[tuple[int, int]]] = {}
    for path in histories:
        vocab, method = history_run(path)
        if method != "cross_entropy":
            h = pd.read_csv(path)
            seen.setdefault(vocab, set()).add((len(h), int(h["train_samples"].sum())))
    return {
        v: " / ".join(f"{e} epoch{'s' * (e != 1)}, {t:,} tokens" for e, t in sorted(b))
        for v, b in seen.items()
    }


def convergence(tidy: pd.DataFrame, histories: list[Path] | None = None) -> pd.DataFrame:
    """Per V: the students' budget (``student budget``, :func:`budgets`, given their
    histories), test top-1 agreement with the ensemble of a single member (mean ± std over
    members) and of every student group (mean ± std over seeds), and whether the criterion
    held (``converged``: EnD's mean >= the members' mean; ``n/a`` without an EnD group). A group
    that does not run at a V (``group_vocab_sizes``) reads ``not run`` there."""
    a = tidy[(tidy["split"] == "test") & (tidy["metric"] == "agreement")]
    stats = mean_std(a, ["vocab", "group"])
    budget = budgets(histories or [])
    rows = []
    for vocab, g in stats.groupby("vocab"):
        g = g.set_index("group")
        row = {"V": int(vocab)}
        if budget:
            row["student budget"] = budget.get(int(vocab), "n/a")
        groups = ["member"] + sorted(set(g.index) - {"member", "ensemble"}, key=order)
        for grp in groups:
            if grp in g.index:
                name = "single member" if grp == "member" else label(grp)
                row[name] = fmt_mean_std(*g.loc[grp, ["mean", "std", "count"]])
        if REFERENCE in g.index and "member" in g.index:
            end, member = g.loc[REFERENCE, "mean"], g.loc["member", "mean"]
            verdict = "yes" if end >= member else "no"
            row["converged"] = f"{verdict} (EnD {end:.3f} vs member {member:.3f})"
        else:
            row["converged"] = "n/a (no EnD or member rows)"
        rows.append(row)
    table = pd.DataFrame(rows)
    groups = [c for c in table.columns if c not in ("V", "student budget", "converged")]
    return table.fillna(dict.fromkeys(groups, "not run"))  # a group only at some V


def tables(tidy: pd.DataFrame, histories: list[Path] | None = None) -> dict[str, Table]:
    """``sweep`` (mean, std, n over seeds per V, group, split, metric, measure), ``convergence``
    (:func:`convergence`; with the students' budget per V given their histories), the per-V
    tables ``main``, ``prr``, ``confidence`` (members and ensemble), ``ood`` (every measure),
    ``ood_main`` (TU, MI and -(1/L) ln P(y|x) only) and, given the training histories,
    ``speed`` (:func:`pipeline.tables.speed_table`)."""
    keys = ["vocab", "group", "split", "metric", "measure"]
    sweep = mean_std(tidy, keys)
    tidy = tidy.sort_values(keys, kind="stable")  # columns appear in the order of the sweep
    main_rows = tidy[(tidy["split"] == "test") & ~tidy["metric"].isin(["prr", *CONFIDENCE])]
    prr_rows = tidy[tidy["metric"] == "prr"]
    ood_rows = tidy[tidy["metric"] == "ood_auroc"]
    key = ood_rows[ood_rows["measure"].isin(KEY_MEASURES)]
    out = {
        "sweep": Table(sweep, index=False),
        "convergence": Table(convergence(tidy, histories), index=False),
        "main": summary_table(main_rows, main_rows["metric"].map(LABELS), by="vocab"),
        "prr": summary_table(prr_rows, "PRR " + prr_rows["measure"], by="vocab"),
        "confidence": confidence_table(tidy),
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
