"""The image task's figures (its spec's figure registry names them; the stage ``figures`` draws
them from the files it is given, never globbing):

* ``rejection_curves``     error rate vs fraction rejected (test), per measure, each system
                           relative to its own error rate, with its own oracle and random
* ``ood_histograms``       uncertainty of ID test vs each OOD set, per measure, ensemble vs students
* ``ood_examples``         the ensemble's predicted classes on each OOD set, example images
* ``reliability``          reliability diagrams (test) per system group
* ``shift``                accuracy and ECE vs corruption severity, mean ± std over seeds
* ``training_curves``      student validation accuracy / NLL / agreement per epoch, per method
* ``knowledge_scatter``    per-example knowledge uncertainty (MI): student vs ensemble
* ``gradient_analysis``    the synthetic gradient analysis (shared: :mod:`pipeline.plotting`)

Each takes the output folder and the registry's inputs and options as keywords, and returns the
PNG and PDF it wrote.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from safetensors.numpy import load_file

from pipeline.maths import metrics as Mx
from pipeline.methods import METHODS, label, order
from pipeline.plotting import (
    MEASURE_LABELS,
    color,
    failed,
    gradient_analysis,
    mean_band,
    representatives,
    save,
)
from pipeline.tables import read_tidy

__all__ = [
    "gradient_analysis",
    "knowledge_scatter",
    "ood_examples",
    "ood_histograms",
    "rejection_curves",
    "reliability",
    "shift",
    "training_curves",
]


def rejection_curves(out: Path, per_example: list[Path]) -> list[Path]:
    """Per measure, each system's test error rate after rejecting the most uncertain fraction,
    divided by its own error rate without rejection: every curve starts at 1, random rejection
    is the shared line 1 - f and each system's oracle (thin dashed, its colour) reaches 0 at
    its own error rate. The x range follows the typical (median) system's error rate, so a
    failed ablation changes neither axis; it is marked "failed" with its accuracy."""
    reps = representatives(per_example)
    arrays = {g: load_file(str(p)) for g, p in reps.items()}
    errors = {g: a["test.pred"] != a["test.label"] for g, a in arrays.items()}
    e0 = {g: float(np.mean(e)) for g, e in errors.items()}
    marked = failed(e0)
    typical = float(np.median([e0[g] for g in e0 if g not in marked] or list(e0.values())))
    x_max = float(min(1.0, max(0.2, 4 * typical)))
    measures = ["total", "knowledge", "neg_confidence"]
    fig, axes = plt.subplots(1, len(measures), figsize=(4.4 * len(measures), 3.8), sharey=True)
    for ax, measure in zip(axes, measures, strict=True):
        for group, a in arrays.items():
            if e0[group] == 0:
                continue
            f, e = Mx.rejection_curve(a[f"test.{measure}"], errors[group])
            prr = Mx.prr(a[f"test.{measure}"], errors[group])
            name = f"{label(group)} (PRR {prr:.2f})"
            if group in marked:
                name += f", failed: acc {1 - e0[group]:.2f}"
            style = ":" if group in marked else "-"
            ax.plot(f, e / e0[group], style, color=color(group), label=name)
            ax.plot([0, e0[group], 1], [1, 0, 0], "--", color=color(group), lw=0.6, alpha=0.6)
        ax.plot([0, 1], [1, 0], ":", color="gray", label="random")
        ax.set(
            title=f"rejection by {MEASURE_LABELS[measure]}",
            xlabel="fraction of test images rejected",
            xlim=(0, x_max),
            ylim=(0, 1.02),
        )
        ax.legend(fontsize=6.5, loc="upper right")
    axes[0].set_ylabel("error rate / error rate with no rejection")
    return save(fig, out, "rejection_curves")


def _ood_sets(arrays: dict[str, np.ndarray]) -> list[str]:
    return sorted({k.split(".")[0] for k in arrays if k.startswith("ood_")})


def ood_histograms(out: Path, per_example: list[Path]) -> list[Path]:
    """Per system (ensemble and students) and measure, the score's density on the ID test set
    and on every OOD set, with each set's ROC-AUC (OOD positive)."""
    reps = {g: p for g, p in representatives(per_example).items() if g != "member"}
    a0 = load_file(str(next(iter(reps.values()))))
    ood = _ood_sets(a0)
    measures = ["total", "knowledge", "epkl", "neg_confidence"]
    fig, axes = plt.subplots(
        len(reps), len(measures), figsize=(3.2 * len(measures), 1.9 * len(reps)), squeeze=False
    )
    for i, (group, path) in enumerate(reps.items()):
        a = load_file(str(path))
        for j, measure in enumerate(measures):
            ax = axes[i, j]
            s_in = a[f"test.{measure}"]
            s_out = {o: a[f"{o}.{measure}"] for o in ood}
            every = np.concatenate([s_in, *s_out.values()]).astype(np.float64)
            if np.ptp(every) <= 1e-6 * max(1.0, float(np.abs(every).max())):
                categorical = group in METHODS and not METHODS[group].dirichlet
                text = (
                    "not defined\n(categorical output)"
                    if categorical
                    else f"constant: {float(every.mean()):.4g}\non every image"
                )
                ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, size=8)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(label(group), fontsize=9)
                continue
            lo, hi = float(every.min()), float(every.max())
            bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 40)
            ax.hist(s_in, bins=bins, alpha=0.35, density=True, color="gray", label="ID test")
            ax.set_yscale("log")  # the ID scores pile up near 0: a log axis shows both sets
            aucs = []
            for o, v in s_out.items():
                name = o.removeprefix("ood_")
                ax.hist(v, bins=bins, density=True, histtype="step", lw=1.2, label=name)
                aucs.append(f"{name} {Mx.ood_auroc(s_in, v):.2f}")
            if aucs:
                ax.text(
                    0.97,
                    0.95,
                    "AUROC\n" + "\n".join(aucs),
                    transform=ax.transAxes,
                    ha="right",
                    va="top",
                    fontsize=6,
                )
            if i == 0:
                ax.set_title(MEASURE_LABELS[measure], fontsize=9)
            if j == 0:
                ax.set_ylabel(label(group), fontsize=9)
            ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6, loc="upper left")
    return save(fig, out, "ood_histograms")


def ood_examples(
    out: Path, per_example: list[Path], data_manifest: Path | None, n: int = 8
) -> list[Path]:
    """What the ensemble makes of each OOD set. Top: the share of images per predicted class
    (ID test for reference) and, in the legend, the mean confidence. Below, per OOD set: its
    first ``n`` images (from the prepared data, when they are in-memory images) titled with the
    ensemble's top class and confidence."""
    ens = load_file(str(representatives(per_example)["ensemble"]))
    sets = ["test", *_ood_sets(ens)]
    manifest = None
    if data_manifest is not None:
        from pipeline.tasks.image.data import load_manifest, load_split

        manifest = load_manifest(data_manifest.parent)
    k = int(ens["test.probs"].shape[1])
    names = (manifest or {}).get("class_names") or [str(c) for c in range(k)]
    ood = sets[1:]
    fig = plt.figure(figsize=(max(8.0, 1.1 * n), 3.2 + 1.25 * len(ood)))
    grid = fig.add_gridspec(1 + len(ood), n, height_ratios=[2.6] + [1.0] * len(ood))
    ax = fig.add_subplot(grid[0, :])
    width = 0.8 / len(sets)
    for i, split in enumerate(sets):
        pred = ens[f"{split}.pred"]
        share = np.bincount(pred, minlength=k)[:k] / len(pred)
        conf = float(np.mean(-ens[f"{split}.neg_confidence"]))
        name = "ID test" if split == "test" else split.removeprefix("ood_")
        ax.bar(
            np.arange(k) + (i - (len(sets) - 1) / 2) * width,
            share,
            width,
            label=f"{name} (mean confidence {conf:.2f})",
        )
    ax.set_xticks(np.arange(k), names if k <= 20 else None, fontsize=7, rotation=20)
    ax.set(ylabel="share of images", title="the ensemble's top class on each set")
    ax.legend(fontsize=7)
    for row, split in enumerate(ood, start=1):
        images = None
        if manifest is not None and split in manifest["splits"]:
            x = load_split(data_manifest.parent, split).get("images")
            if hasattr(x, "ndim") and x.ndim == 3:
                images = x[:n].numpy()
        for j in range(n):
            a = fig.add_subplot(grid[row, j])
            a.set_xticks([])
            a.set_yticks([])
            if images is None or j >= len(images):
                a.axis("off")
                continue
            a.imshow(images[j], cmap="gray", vmin=0, vmax=255)
            c = int(ens[f"{split}.pred"][j])
            a.set_title(f"{names[c]} {-float(ens[f'{split}.neg_confidence'][j]):.2f}", fontsize=6.5)
            if j == 0:
                a.set_ylabel(split.removeprefix("ood_"), fontsize=8)
    fig.tight_layout()
    return save(fig, out, "ood_examples")


def reliability(out: Path, per_example: list[Path], ece_bins: int = Mx.ECE_BINS) -> list[Path]:
    """Reliability diagrams of the test set, one per system group, with its ECE."""
    bins = ece_bins
    reps = representatives(per_example)
    fig, axes = plt.subplots(1, len(reps), figsize=(2.6 * len(reps), 2.8), sharey=True)
    for ax, (group, path) in zip(np.atleast_1d(axes), reps.items(), strict=True):
        a = load_file(str(path))
        r = Mx.reliability_bins(a["test.probs"], a["test.label"], bins)
        centers = (r["edges"][:-1] + r["edges"][1:]) / 2
        ax.bar(
            centers,
            np.nan_to_num(r["accuracy"]),
            width=1 / bins,
            edgecolor="k",
            color=color(group),
            alpha=0.7,
        )
        ax.plot([0, 1], [0, 1], "--", color="gray")
        ece = Mx.ece(a["test.probs"], a["test.label"], bins)
        ax.set(
            title=f"{label(group)}\nECE {ece:.3f}",
            xlabel="confidence",
            xlim=(0, 1),
            ylim=(0, 1),
        )
    np.atleast_1d(axes)[0].set_ylabel("accuracy")
    return save(fig, out, "reliability")


def shift(out: Path, tidy: Path) -> list[Path]:
    """Accuracy and ECE against corruption severity, mean ± std over seeds; a failed system
    (test error above :data:`FAILED_ERROR_RATIO` times the ensemble's) is drawn dotted and
    labelled so."""
    rows = read_tidy(tidy)
    test = rows[(rows["split"] == "test") & (rows["metric"] == "accuracy")]
    marked = failed((1 - test.groupby("group")["value"].mean()).to_dict())
    t = rows[(rows["split"] == "shift") & (rows["corruption"] == "all")]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric in zip(axes, ["accuracy", "ece"], strict=True):
        d = t[t["metric"] == metric]
        for group in sorted(set(d["group"]), key=order):
            g = d[d["group"] == group].groupby("severity")["value"].agg(["mean", "std"])
            ax.errorbar(
                g.index,
                g["mean"],
                yerr=g["std"].fillna(0),
                marker="o",
                capsize=2,
                ls=":" if group in marked else "-",
                color=color(group),
                label=label(group) + (" (failed)" if group in marked else ""),
            )
        ax.set(xlabel="corruption severity", ylabel=metric, title=f"{metric} under shift")
    axes[1].legend(fontsize=7)
    return save(fig, out, "shift")


def training_curves(out: Path, histories: list[Path]) -> list[Path]:
    """Each method's validation accuracy / NLL / agreement and training loss per epoch, mean ±
    std over its students' seeds."""
    frames = []
    for h in histories:
        method, seed = h.parent.parent.name, h.parent.name
        frames.append(pd.read_csv(h).assign(method=method, seed=seed))
    d = pd.concat(frames)
    cols = [c for c in ("val_acc", "val_nll", "val_agreement", "train_loss") if c in d]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.6 * len(cols), 3.2))
    for ax, col in zip(axes, cols, strict=True):
        for method, g in d.groupby("method"):
            s = g.groupby("epoch")[col].agg(["mean", "std"])
            mean_band(ax, s, method, marker="o")
        ax.set(xlabel="epoch", title=col)
    axes[0].legend(fontsize=7)
    return save(fig, out, "training_curves")


def knowledge_scatter(out: Path, per_example: list[Path]) -> list[Path]:
    """Per-example knowledge uncertainty (MI) of each Dirichlet student against the
    ensemble's, on the test set and every OOD set."""
    reps = representatives(per_example)
    ens = load_file(str(reps["ensemble"]))
    students = [g for g in reps if g in METHODS and METHODS[g].dirichlet]
    fig, axes = plt.subplots(
        1, max(1, len(students)), figsize=(3.6 * max(1, len(students)), 3.4), squeeze=False
    )
    splits = ["test", *_ood_sets(ens)]
    for ax, group in zip(axes[0], students, strict=False):
        a = load_file(str(reps[group]))
        for split in splits:
            x, y = ens[f"{split}.knowledge"], a[f"{split}.knowledge"]
            ax.scatter(x, y, s=3, alpha=0.4, label=split)
        both = np.concatenate([ens[f"{s}.knowledge"] for s in splits])
        ax.plot([0, both.max()], [0, both.max()], "--", color="gray")
        ax.set(
            xlabel="ensemble MI",
            ylabel=f"{label(group)} MI",
            title=label(group),
        )
        ax.legend(fontsize=7, markerscale=3)
    return save(fig, out, "knowledge_scatter")
