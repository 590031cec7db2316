"""The translation task's figures (its spec's figure registry names them; each file is named
``translation_*`` so the published figures never overwrite the token task's):

* ``translation_sweep``     the headline: test BLEU against the target vocabulary V, one line per
  method (mean ± std over seeds), a single member's band and the ensemble's line; agreement with
  the ensemble beside it; legends outside the data, outliers marked at the axis edge
* ``translation_curves``    val agreement and NLL gap against steps, a column per V
  (:func:`pipeline.plotting.learning_curves`)
* ``translation_gradients`` the gradient diagnostic on real validation tokens
  (:func:`pipeline.plotting.token_gradients`)
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pipeline.methods import label, order
from pipeline.plotting import color, learning_curves, save, token_gradients

__all__ = ["translation_curves", "translation_gradients", "translation_sweep"]

PANELS = (("bleu", "test BLEU"), ("agreement", "test top-1 agreement\nwith the ensemble"))


def _limits(values: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """An axis range set by the reference lines and the bulk of the methods: a value further
    than the references' spread x 3 below them is an outlier, drawn at the edge."""
    ref = ref[np.isfinite(ref)]
    lo, hi = float(ref.min()), float(ref.max())
    span = max(hi - lo, 1e-3 * max(abs(hi), 1.0), 0.02 * abs(hi))
    vals = values[np.isfinite(values)]
    inside = vals[(vals >= lo - 3 * span) & (vals <= hi + 3 * span)]
    if len(inside):
        lo, hi = min(lo, float(inside.min())), max(hi, float(inside.max()))
    pad = 0.08 * (hi - lo or 1.0)
    return lo - pad, hi + pad


def translation_sweep(out: Path, sweep: Path) -> list[Path]:
    """Test BLEU and agreement with the ensemble against V (module docstring)."""
    s = pd.read_csv(sweep, keep_default_na=False)
    for col in ("mean", "std"):
        s[col] = pd.to_numeric(s[col].replace("", np.nan))
    test = s[s["split"] == "test"]
    groups = sorted(set(test["group"]) - {"member", "ensemble"}, key=order)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5.0 * len(PANELS) + 2.2, 3.8))
    for ax, (metric, ylabel) in zip(axes, PANELS, strict=True):
        rows = test[test["metric"] == metric]
        ref = []
        member = rows[rows["group"] == "member"].sort_values("vocab")
        if len(member):
            m, sd = member["mean"].to_numpy(), member["std"].fillna(0).to_numpy()
            ax.fill_between(
                member["vocab"], m - sd, m + sd, color="0.85", label="single member ± std"
            )
            ax.plot(member["vocab"], m, color="0.45", lw=1.2, ls="--")
            ref += [*(m - sd), *(m + sd)]
        ens = rows[rows["group"] == "ensemble"].sort_values("vocab")
        if len(ens):
            ax.plot(ens["vocab"], ens["mean"], "k-s", ms=4, lw=1.4, label="ensemble")
            ref += list(ens["mean"])
        values = rows[rows["group"].isin(groups)]["mean"].to_numpy()
        lo, hi = _limits(values, np.array(ref or list(values), dtype=float))
        for g in groups:
            r = rows[rows["group"] == g].sort_values("vocab")
            y = r["mean"].to_numpy()
            clipped = np.clip(y, lo, hi)
            ax.errorbar(
                r["vocab"],
                clipped,
                yerr=r["std"].fillna(0),
                fmt="-o",
                ms=4,
                capsize=3,
                color=color(g),
                label=label(g),
            )
            for x, yv, c in zip(r["vocab"], y, clipped, strict=True):
                if yv != c:  # an outlier: marked at the edge with its value
                    ax.annotate(
                        f"{yv:.2f}",
                        (x, c),
                        textcoords="offset points",
                        xytext=(4, -10 if c == lo else 4),
                        fontsize=7,
                        color=color(g),
                    )
                    ax.plot([x], [c], marker="v" if c == lo else "^", color=color(g), ms=8)
        ax.set(xscale="log", xlabel="target vocabulary V (classes)", ylabel=ylabel, ylim=(lo, hi))
        vocabs = sorted(set(rows["vocab"]))
        ax.set_xticks(vocabs, [f"{int(v):,}" for v in vocabs])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="center left", bbox_to_anchor=(0.80, 0.5), fontsize=8, frameon=False
    )
    fig.tight_layout(rect=(0, 0, 0.80, 1))
    return save(fig, out, "translation_sweep")


def translation_curves(out: Path, curves: list[Path]) -> list[Path]:
    """The students' learning curves (:func:`pipeline.plotting.learning_curves`)."""
    return learning_curves(out, curves, name="translation_curves")


def translation_gradients(out: Path, token_profile: Path, token_gate: Path) -> list[Path]:
    """The real-data gradient diagnostic (:func:`pipeline.plotting.token_gradients`)."""
    return token_gradients(out, token_profile, token_gate, name="translation_gradients")
