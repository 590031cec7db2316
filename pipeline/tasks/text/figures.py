"""The token task's figures (its spec's figure registry names them; the stage ``figures`` draws
them from the files it is given):

* ``class_sweep``          student-vs-ensemble gaps against the number of classes V
* ``learning_curves``      val agreement and NLL gap against steps, a column per V
* ``token_gradients``      the gradient diagnostic on real validation tokens

Each takes the output folder and the registry's inputs and options as keywords, and returns the
PNG and PDF it wrote.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pipeline.methods import COLORS, label, order
from pipeline.plotting import (
    MEASURE_LABELS,
    color,
    head_share_panel,
    learning_curves,
    read_curves,
    save,
    token_gradients,
)

__all__ = ["class_sweep", "learning_curves", "read_curves", "token_gradients"]


def class_sweep(
    out: Path, sweep: Path, shares: Path | None, ood_set: str, measure: str
) -> list[Path]:
    """The class-count figure: student-vs-ensemble gaps against V, one line per method
    (mean ± std over seeds), and the synthetic gradient head share against K."""
    s = pd.read_csv(sweep, keep_default_na=False)
    for col in ("mean", "std"):
        s[col] = pd.to_numeric(s[col].replace("", np.nan))
    test = s[s["split"] == "test"]
    ens_nll = test[(test["group"] == "ensemble") & (test["metric"] == "nll")].set_index("vocab")[
        "mean"
    ]
    methods = sorted(set(s["group"]) - {"member", "ensemble"}, key=order)
    panels = 4 if shares is not None else 3
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6))

    def line(ax, rows, label, color, shift=None, style="-o"):
        rows = rows.sort_values("vocab")
        y = rows["mean"].to_numpy()
        if shift is not None:
            y = y - shift.reindex(rows["vocab"]).to_numpy()
        ax.errorbar(
            rows["vocab"], y, yerr=rows["std"], fmt=style, capsize=3, color=color, label=label
        )

    for g in methods:
        rows = test[test["group"] == g]
        lab, col = label(g), color(g)
        line(axes[0], rows[rows["metric"] == "nll"], lab, col, shift=ens_nll)
        line(axes[1], rows[rows["metric"] == "agreement"], lab, col)
    member = test[test["group"] == "member"]
    line(
        axes[0], member[member["metric"] == "nll"], "single model", COLORS["member"], ens_nll, "--s"
    )
    line(
        axes[1],
        member[member["metric"] == "agreement"],
        "single model",
        COLORS["member"],
        None,
        "--s",
    )
    axes[0].axhline(0.0, color="black", lw=0.8)
    axes[0].set(ylabel="test NLL − ensemble NLL (nats/token)", title="NLL gap to the ensemble")
    axes[1].set(ylabel="top-1 agreement with the ensemble", title="agreement (test tokens)")
    if f"ood_{ood_set}" not in set(s["split"]):
        have = sorted(x.removeprefix("ood_") for x in set(s["split"]) if x.startswith("ood_"))
        raise ValueError(f"figure: the OOD set {ood_set!r} is not in the sweep ({have})")
    ood = s[
        (s["split"] == f"ood_{ood_set}") & (s["metric"] == "ood_auroc") & (s["measure"] == measure)
    ]
    for g in ["ensemble", *methods]:
        style = "--" if g == "ensemble" else "-o"
        line(axes[2], ood[ood["group"] == g], label(g), color(g), None, style)
    axes[2].set(
        ylabel=f"OOD ROC-AUC ({MEASURE_LABELS.get(measure, measure)})",
        title=f"test vs {ood_set} sequences",
    )
    for ax in axes[:3]:
        ax.set(xscale="log", xlabel="number of classes V")
        ax.legend(fontsize=8)
    if shares is not None:
        head_share_panel(axes[3], shares, title="gradient head share (synthetic)")
    fig.tight_layout()
    return save(fig, out, "class_sweep")
