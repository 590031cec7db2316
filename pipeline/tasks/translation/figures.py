"""The translation task's figures (its spec's figure registry names them; each file is named
``translation_*`` so the published figures never overwrite the token task's):

* ``translation_sweep``     the headline: test BLEU against the target vocabulary V, one line per
  method (mean ± std over seeds), a single member's band and the ensemble's line; agreement with
  the ensemble beside it (without the ensemble's own line, 1 by definition, which would only
  stretch the axis); legends outside the data, outliers marked at the axis edge
* ``translation_curves``    val agreement and NLL gap against steps, a column per V
  (:func:`pipeline.plotting.learning_curves`)
* ``translation_gradients`` the gradient diagnostic on real validation tokens
  (:func:`pipeline.plotting.token_gradients`)
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from pipeline.methods import order
from pipeline.plotting import (
    learning_curves,
    legend_outside,
    read_sweep,
    save,
    sweep_panel,
    token_gradients,
)

__all__ = ["translation_curves", "translation_gradients", "translation_sweep"]

PANELS = (
    ("bleu", "test BLEU", True),
    ("agreement", "test top-1 agreement\nwith the ensemble", False),
)
"""(metric, y label, whether the ensemble's own line is drawn)."""


def translation_sweep(out: Path, sweep: Path) -> list[Path]:
    """Test BLEU and agreement with the ensemble against V (module docstring)."""
    s = read_sweep(sweep)
    test = s[s["split"] == "test"]
    groups = sorted(set(test["group"]) - {"member", "ensemble"}, key=order)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5.0 * len(PANELS) + 2.2, 3.8))
    for ax, (metric, ylabel, ensemble) in zip(axes, PANELS, strict=True):
        sweep_panel(ax, test[test["metric"] == metric], groups, ylabel, ensemble=ensemble)
        ax.set_xlabel("target vocabulary V (classes)")
    legend_outside(fig, axes)
    return save(fig, out, "translation_sweep")


def translation_curves(out: Path, curves: list[Path]) -> list[Path]:
    """The students' learning curves (:func:`pipeline.plotting.learning_curves`)."""
    return learning_curves(out, curves, name="translation_curves")


def translation_gradients(out: Path, token_profile: Path, token_gate: Path) -> list[Path]:
    """The real-data gradient diagnostic (:func:`pipeline.plotting.token_gradients`)."""
    return token_gradients(out, token_profile, token_gate, name="translation_gradients")
