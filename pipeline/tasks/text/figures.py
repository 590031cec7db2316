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

from pipeline.methods import order
from pipeline.plotting import (
    MEASURE_LABELS,
    head_share_panel,
    learning_curves,
    legend_outside,
    read_curves,
    read_sweep,
    save,
    sweep_panel,
    token_gradients,
)

__all__ = ["class_sweep", "learning_curves", "read_curves", "token_gradients"]


def class_sweep(
    out: Path,
    sweep: Path,
    shares: Path | None,
    ood_set: str,
    measure: str,
    headline: str | None = None,
) -> list[Path]:
    """The class-count figure. The headline panel, the paper's comparison: test top-1 agreement
    with the ensemble against V for the ``headline`` groups (comma-separated; default every
    student group), a single member's mean ± std as a grey band. Beside it, for every group: the
    NLL gap to the ensemble, the OOD ROC-AUC of ``measure`` on ``ood_set``, and the synthetic
    gradient head share against K. Outliers are marked at the axis edge with their values
    (:func:`pipeline.plotting.sweep_panel`), the legend sits outside the panels."""
    s = read_sweep(sweep)
    test = s[s["split"] == "test"]
    ens_nll = test[(test["group"] == "ensemble") & (test["metric"] == "nll")].set_index("vocab")[
        "mean"
    ]
    groups = sorted(set(s["group"]) - {"member", "ensemble"}, key=order)
    chosen = [g.strip() for g in headline.split(",")] if headline else groups
    unknown = sorted(set(chosen) - set(groups))
    if unknown:
        raise ValueError(f"figure.headline: {unknown} are not student groups of the sweep {groups}")
    if f"ood_{ood_set}" not in set(s["split"]):
        have = sorted(x.removeprefix("ood_") for x in set(s["split"]) if x.startswith("ood_"))
        raise ValueError(f"figure: the OOD set {ood_set!r} is not in the sweep ({have})")
    widths = [2.0, 1.2, 1.2] + ([1.2] if shares is not None else [])
    fig, axes = plt.subplots(
        1, len(widths), figsize=(3.4 * sum(widths) + 2.4, 4.2), gridspec_kw={"width_ratios": widths}
    )
    agree = test[test["metric"] == "agreement"]
    sweep_panel(axes[0], agree, chosen, "test top-1 agreement with the ensemble", ensemble=False)
    axes[0].set_title("the paper's comparison: agreement with the ensemble (test tokens)")
    sweep_panel(
        axes[1], test[test["metric"] == "nll"], groups, "test NLL − ensemble NLL (nats/token)",
        shift=ens_nll,
    )  # fmt: skip
    axes[1].set_title("NLL gap, every group")
    ood = s[
        (s["split"] == f"ood_{ood_set}") & (s["metric"] == "ood_auroc") & (s["measure"] == measure)
    ]
    sweep_panel(axes[2], ood, groups, f"OOD ROC-AUC ({MEASURE_LABELS.get(measure, measure)})")
    axes[2].set_title(f"test vs {ood_set} sequences")
    if shares is not None:
        head_share_panel(axes[3], shares, title="gradient head share (synthetic)")
        axes[3].legend(fontsize=7)
    legend_outside(fig, axes[:3], right=0.84)
    return save(fig, out, "class_sweep")
