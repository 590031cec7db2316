"""Figures (``rule figures``): every plot is drawn from files the evaluation already wrote, so
regenerating them never touches training. Each figure is saved as PNG and PDF.

* ``rejection_curves``     error rate vs fraction rejected (test), per measure, oracle/random
* ``ood_histograms``       uncertainty of ID test vs OOD, per measure, ensemble vs students
* ``reliability``          reliability diagrams (test) per system group
* ``shift``                accuracy and ECE vs corruption severity, mean ± std over seeds
* ``training_curves``      student validation accuracy / NLL / agreement per epoch, per method
* ``knowledge_scatter``    per-example knowledge uncertainty (MI): student vs ensemble
* ``gradient_analysis``    head share of |dL/dz| vs K, and |dL/dz_c| vs rank of pi_bar_c

Run by hand: ``python -m pipeline.figures --results results/default --out results/default/figures``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from pipeline import metrics as Mx  # noqa: E402
from pipeline.evaluate import GROUP_LABELS, GROUP_ORDER, parse_system, read_tidy  # noqa: E402

FIGURES = (
    "rejection_curves",
    "ood_histograms",
    "reliability",
    "shift",
    "training_curves",
    "knowledge_scatter",
    "gradient_analysis",
)
COLORS = {
    "member": "tab:gray",
    "ensemble": "black",
    "end": "tab:blue",
    "end2": "tab:orange",
    "pd_end2": "tab:green",
    "pd_fkl": "tab:purple",
    "EnD": "tab:blue",
    "EnD2": "tab:orange",
    "PD-EnD2": "tab:green",
}
MEASURE_LABELS = {
    "total": "total (TU)",
    "data": "data (DU)",
    "knowledge": "knowledge (MI)",
    "epkl": "EPKL",
    "rmi": "RMI",
    "neg_confidence": "−confidence",
}


def _save(fig, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=130, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def _representatives(eval_dir: Path) -> dict[str, Path]:
    """One system per group (the lowest seed), in display order."""
    best: dict[str, tuple[int, Path]] = {}
    for d in sorted(eval_dir.iterdir()):
        if not (d / "per_example.safetensors").is_file():
            continue
        group, seed = parse_system(d.name)
        s = -1 if seed is None else seed
        if group not in best or s < best[group][0]:
            best[group] = (s, d / "per_example.safetensors")
    return {
        g: best[g][1]
        for g in sorted(best, key=lambda g: GROUP_ORDER.index(g) if g in GROUP_ORDER else 99)
    }


def rejection_curves(eval_dir: Path, out: Path) -> list[Path]:
    reps = _representatives(eval_dir)
    measures = ["total", "knowledge", "neg_confidence"]
    fig, axes = plt.subplots(1, len(measures), figsize=(4.2 * len(measures), 3.6), sharey=True)
    for ax, measure in zip(axes, measures, strict=True):
        for group, path in reps.items():
            a = load_file(str(path))
            errors = a["test.pred"] != a["test.label"]
            f, e = Mx.rejection_curve(a[f"test.{measure}"], errors)
            ax.plot(f, e, color=COLORS.get(group), label=GROUP_LABELS.get(group, group))
        e0 = e[0]
        ax.plot([0, 1], [e0, 0], ":", color="gray", label="random")
        ax.plot([0, e0, 1], [e0, 0, 0], "--", color="gray", label="oracle")
        ax.set(title=f"rejection by {MEASURE_LABELS[measure]}", xlabel="fraction rejected")
    axes[0].set_ylabel("error rate (test)")
    axes[-1].legend(fontsize=7)
    return _save(fig, out, "rejection_curves")


def ood_histograms(eval_dir: Path, out: Path) -> list[Path]:
    reps = {g: p for g, p in _representatives(eval_dir).items() if g != "member"}
    a0 = load_file(str(next(iter(reps.values()))))
    ood = sorted({k.split(".")[0] for k in a0 if k.startswith("ood_")})[:1]
    measures = ["total", "knowledge", "epkl", "neg_confidence"]
    fig, axes = plt.subplots(
        len(reps), len(measures), figsize=(3.2 * len(measures), 1.9 * len(reps)), squeeze=False
    )
    for i, (group, path) in enumerate(reps.items()):
        a = load_file(str(path))
        for j, measure in enumerate(measures):
            ax = axes[i, j]
            s_in, s_out = a[f"test.{measure}"], a[f"{ood[0]}.{measure}"] if ood else None
            if np.ptp(s_in) == 0 and (s_out is None or np.ptp(s_out) == 0):
                ax.text(
                    0.5,
                    0.5,
                    "not defined\n(categorical output)",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    fontsize=8,
                )
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(GROUP_LABELS.get(group, group), fontsize=9)
                continue
            lo = min(s_in.min(), s_out.min()) if ood else s_in.min()
            hi = max(s_in.max(), s_out.max()) if ood else s_in.max()
            bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 40)
            ax.hist(s_in, bins=bins, alpha=0.6, density=True, label="ID test")
            if ood:
                ax.hist(s_out, bins=bins, alpha=0.6, density=True, label=ood[0])
                auc = Mx.ood_auroc(s_in, s_out)
                ax.text(
                    0.97, 0.9, f"AUROC {auc:.2f}", transform=ax.transAxes, ha="right", fontsize=7
                )
            if i == 0:
                ax.set_title(MEASURE_LABELS[measure], fontsize=9)
            if j == 0:
                ax.set_ylabel(GROUP_LABELS.get(group, group), fontsize=9)
            ax.tick_params(labelsize=6)
    axes[0, -1].legend(fontsize=7)
    return _save(fig, out, "ood_histograms")


def reliability(eval_dir: Path, out: Path, bins: int = 10) -> list[Path]:
    reps = _representatives(eval_dir)
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
            color=COLORS.get(group),
            alpha=0.7,
        )
        ax.plot([0, 1], [0, 1], "--", color="gray")
        ece = Mx.ece(a["test.probs"], a["test.label"], bins)
        ax.set(
            title=f"{GROUP_LABELS.get(group, group)}\nECE {ece:.3f}",
            xlabel="confidence",
            xlim=(0, 1),
            ylim=(0, 1),
        )
    np.atleast_1d(axes)[0].set_ylabel("accuracy")
    return _save(fig, out, "reliability")


def shift(tidy_csv: Path, out: Path) -> list[Path]:
    t = read_tidy(tidy_csv)
    t = t[(t["split"] == "shift") & (t["corruption"] == "all")]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric in zip(axes, ["accuracy", "ece"], strict=True):
        d = t[t["metric"] == metric]
        for group in [g for g in GROUP_ORDER if g in set(d["group"])]:
            g = d[d["group"] == group].groupby("severity")["value"].agg(["mean", "std"])
            ax.errorbar(
                g.index,
                g["mean"],
                yerr=g["std"].fillna(0),
                marker="o",
                capsize=2,
                color=COLORS.get(group),
                label=GROUP_LABELS.get(group, group),
            )
        ax.set(xlabel="corruption severity", ylabel=metric, title=f"{metric} under shift")
    axes[1].legend(fontsize=7)
    return _save(fig, out, "shift")


def training_curves(histories: list[Path], out: Path) -> list[Path]:
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
            ax.plot(
                s.index,
                s["mean"],
                marker="o",
                color=COLORS.get(method),
                label=GROUP_LABELS.get(method, method),
            )
            ax.fill_between(
                s.index,
                s["mean"] - s["std"].fillna(0),
                s["mean"] + s["std"].fillna(0),
                color=COLORS.get(method),
                alpha=0.2,
            )
        ax.set(xlabel="epoch", title=col)
    axes[0].legend(fontsize=7)
    return _save(fig, out, "training_curves")


def knowledge_scatter(eval_dir: Path, out: Path) -> list[Path]:
    reps = _representatives(eval_dir)
    ens = load_file(str(reps["ensemble"]))
    students = [g for g in reps if g in ("end2", "pd_end2", "pd_fkl")]
    fig, axes = plt.subplots(
        1, max(1, len(students)), figsize=(3.6 * max(1, len(students)), 3.4), squeeze=False
    )
    splits = ["test"] + sorted({k.split(".")[0] for k in ens if k.startswith("ood_")})
    for ax, group in zip(axes[0], students, strict=False):
        a = load_file(str(reps[group]))
        for split in splits:
            x, y = ens[f"{split}.knowledge"], a[f"{split}.knowledge"]
            ax.scatter(x, y, s=3, alpha=0.4, label=split)
        both = np.concatenate([ens[f"{s}.knowledge"] for s in splits])
        ax.plot([0, both.max()], [0, both.max()], "--", color="gray")
        ax.set(
            xlabel="ensemble MI",
            ylabel=f"{GROUP_LABELS.get(group, group)} MI",
            title=GROUP_LABELS.get(group, group),
        )
        ax.legend(fontsize=7, markerscale=3)
    return _save(fig, out, "knowledge_scatter")


def head_share_panel(ax, shares_csv: Path, title: str = "where the gradient goes") -> None:
    """Gradient head share against K per method (mean ± std over the synthetic examples of
    ``gradient_analysis/head_share.csv``) on ``ax``."""
    s = pd.read_csv(shares_csv)
    for method, g in s.groupby("method"):
        m = g.groupby("num_classes")["head_share"].agg(["mean", "std"])
        ax.errorbar(
            m.index,
            m["mean"],
            yerr=m["std"],
            marker="o",
            capsize=2,
            color=COLORS.get(method),
            label=method,
        )
    ax.set(
        xscale="log",
        xlabel="number of classes K",
        ylim=(0, 1.05),
        ylabel="share of Σ|∂L/∂z| on head (π̄ ≥ 1e-3)",
        title=title,
    )
    ax.legend(fontsize=8)


def gradient_analysis(shares_csv: Path, profile_csv: Path, out: Path) -> list[Path]:
    p = pd.read_csv(profile_csv)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    head_share_panel(axes[0], shares_csv)
    for method in [c for c in p.columns if c not in ("rank", "mean_prob")]:
        axes[1].plot(p["rank"], p[method], color=COLORS.get(method), label=method)
    axes[1].set(
        xscale="log",
        yscale="log",
        xlabel="rank of π̄_c",
        ylabel="mean |∂L/∂z_c|",
        title=f"per-class gradient, K = {len(p):,}",
    )
    axes[1].legend()
    return _save(fig, out, "gradient_analysis")


def make_all(results: Path, out: Path, gradient_dir: Path | None = None) -> list[Path]:
    eval_dir = results / "eval"
    histories = sorted((results / "students").glob("*/seed*/history.csv"))
    paths = []
    paths += rejection_curves(eval_dir, out)
    paths += ood_histograms(eval_dir, out)
    paths += reliability(eval_dir, out)
    paths += shift(results / "tables" / "metrics_tidy.csv", out)
    paths += training_curves(histories, out)
    paths += knowledge_scatter(eval_dir, out)
    gradient_dir = gradient_dir or results / "gradient_analysis"
    paths += gradient_analysis(
        gradient_dir / "head_share.csv", gradient_dir / "rank_profile.csv", out
    )
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description="Draw every figure from evaluation outputs")
    ap.add_argument("--results", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    for p in make_all(args.results, args.out):
        print(p)


if __name__ == "__main__":
    main()
