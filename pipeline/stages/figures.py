"""Stage ``figures`` (``rule figures``): every plot is drawn from files the evaluation and the
aggregation already wrote (passed explicitly, never found by globbing), so regenerating them never
touches training. Each figure is saved as PNG and PDF; a task draws the figures its
:class:`pipeline.tasks.TaskSpec` lists.

* ``rejection_curves``     error rate vs fraction rejected (test), per measure, each system
                           relative to its own error rate, with its own oracle and random
* ``ood_histograms``       uncertainty of ID test vs each OOD set, per measure, ensemble vs students
* ``ood_examples``         the ensemble's predicted classes on each OOD set, example images
* ``reliability``          reliability diagrams (test) per system group
* ``shift``                accuracy and ECE vs corruption severity, mean ± std over seeds
* ``training_curves``      student validation accuracy / NLL / agreement per epoch, per method
* ``knowledge_scatter``    per-example knowledge uncertainty (MI): student vs ensemble
* ``gradient_analysis``    head share of |dL/dz| vs K, and |dL/dz_c| vs rank of pi_bar_c
* ``class_sweep``          (token task) student-vs-ensemble gaps against the number of classes
* ``learning_curves``      (token task) val agreement and NLL gap against steps, a column per V
* ``token_gradients``      (token task) the gradient diagnostic on real validation tokens

Run by hand, e.g.: ``python -m pipeline.stages.figures --task image --out figs
--per-example results/default/eval/*/per_example.safetensors --tidy ... --histories ...
--shares ... --profile ...``.
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

from pipeline import methods, tasks  # noqa: E402
from pipeline.io import atomic_path, reported  # noqa: E402
from pipeline.maths import metrics as Mx  # noqa: E402
from pipeline.methods import COLORS, METHODS, label, order, parse_system  # noqa: E402
from pipeline.tables import read_tidy  # noqa: E402

MEASURE_LABELS = {
    "total": "total (TU)",
    "data": "data (DU)",
    "knowledge": "knowledge (MI)",
    "epkl": "EPKL",
    "rmi": "RMI",
    "neg_confidence": "−confidence",
    "seq_nll": "−(1/L) ln P(y|x)",
}


_PALETTE: dict[str, str] = {}
"""The run's colour per group (:func:`palette`), set by :func:`draw`."""


def color(group: str) -> str:
    """A group's colour in this run's figures: the run's palette, else :func:`methods.color`."""
    return _PALETTE.get(group) or methods.color(group)


def palette(groups) -> dict[str, str]:
    """Colours for a run's groups: :data:`pipeline.methods.COLORS` for the registered ones; the
    variants take the entries of ``VARIANT_PALETTE`` in :func:`pipeline.methods.order`, so no two
    variants of a run share a colour (up to its 7 entries, then they repeat), where
    :func:`pipeline.methods.color`'s name hash can give two the same. Every figure of a run uses
    the same map. (Here, not in :mod:`pipeline.methods`, which every stage imports: a colour
    change must not retrain anything.)"""
    groups = sorted(set(groups), key=order)
    variants = [g for g in groups if g not in COLORS]
    return {g: COLORS[g] for g in groups if g in COLORS} | {
        g: methods.VARIANT_PALETTE[i % len(methods.VARIANT_PALETTE)] for i, g in enumerate(variants)
    }


def run_groups(task: str, args: argparse.Namespace) -> list[str]:
    """Every system group of the run, from its sweep table (text) or tidy metrics (image)."""
    table = args.sweep if tasks.spec(task).sweeps_classes else args.tidy
    if table is None:
        return []
    return sorted(set(pd.read_csv(table, usecols=["group"])["group"].astype(str)))


def _save(fig, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    try:
        for path, dpi in zip(paths, (130, None), strict=True):
            with atomic_path(path) as tmp:  # a killed job never leaves half a figure
                fig.savefig(tmp, format=path.suffix[1:], dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return paths


def _representatives(files: list[Path]) -> dict[str, Path]:
    """One evaluation per group (the lowest seed), in display order; ``files`` are
    ``.../eval/<system>/per_example.safetensors``."""
    best: dict[str, tuple[int, Path]] = {}
    for path in sorted(map(Path, files)):
        group, seed = parse_system(path.parent.name)
        s = -1 if seed is None else seed
        if group not in best or s < best[group][0]:
            best[group] = (s, path)
    return {g: best[g][1] for g in sorted(best, key=order)}


FAILED_ERROR_RATIO = 3.0
"""A system whose test error exceeds this many times the ensemble's is marked as failed in the
figures (drawn, labelled with its accuracy, never setting the axes)."""


def _failed(base_error: dict[str, float]) -> set[str]:
    ref = base_error.get("ensemble", float(np.median(list(base_error.values()))))
    return {g for g, e in base_error.items() if e > FAILED_ERROR_RATIO * max(ref, 1e-12)}


def rejection_curves(files: list[Path], out: Path) -> list[Path]:
    """Per measure, each system's test error rate after rejecting the most uncertain fraction,
    divided by its own error rate without rejection: every curve starts at 1, random rejection
    is the shared line 1 - f and each system's oracle (thin dashed, its colour) reaches 0 at
    its own error rate. The x range follows the typical (median) system's error rate, so a
    failed ablation changes neither axis; it is marked "failed" with its accuracy."""
    reps = _representatives(files)
    arrays = {g: load_file(str(p)) for g, p in reps.items()}
    errors = {g: a["test.pred"] != a["test.label"] for g, a in arrays.items()}
    e0 = {g: float(np.mean(e)) for g, e in errors.items()}
    failed = _failed(e0)
    typical = float(np.median([e0[g] for g in e0 if g not in failed] or list(e0.values())))
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
            if group in failed:
                name += f", failed: acc {1 - e0[group]:.2f}"
            style = ":" if group in failed else "-"
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
    return _save(fig, out, "rejection_curves")


def _ood_sets(arrays: dict[str, np.ndarray]) -> list[str]:
    return sorted({k.split(".")[0] for k in arrays if k.startswith("ood_")})


def ood_histograms(files: list[Path], out: Path) -> list[Path]:
    """Per system (ensemble and students) and measure, the score's density on the ID test set
    and on every OOD set, with each set's ROC-AUC (OOD positive)."""
    reps = {g: p for g, p in _representatives(files).items() if g != "member"}
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
    return _save(fig, out, "ood_histograms")


def ood_examples(
    files: list[Path], data_manifest: Path | None, out: Path, n: int = 8
) -> list[Path]:
    """What the ensemble makes of each OOD set. Top: the share of images per predicted class
    (ID test for reference) and, in the legend, the mean confidence. Below, per OOD set: its
    first ``n`` images (from the prepared data, when they are in-memory images) titled with the
    ensemble's top class and confidence."""
    ens = load_file(str(_representatives(files)["ensemble"]))
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
    return _save(fig, out, "ood_examples")


def reliability(files: list[Path], out: Path, bins: int = Mx.ECE_BINS) -> list[Path]:
    reps = _representatives(files)
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
    return _save(fig, out, "reliability")


def shift(tidy_csv: Path, out: Path) -> list[Path]:
    """Accuracy and ECE against corruption severity, mean ± std over seeds; a failed system
    (test error above :data:`FAILED_ERROR_RATIO` times the ensemble's) is drawn dotted and
    labelled so."""
    tidy = read_tidy(tidy_csv)
    test = tidy[(tidy["split"] == "test") & (tidy["metric"] == "accuracy")]
    failed = _failed((1 - test.groupby("group")["value"].mean()).to_dict())
    t = tidy[(tidy["split"] == "shift") & (tidy["corruption"] == "all")]
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
                ls=":" if group in failed else "-",
                color=color(group),
                label=label(group) + (" (failed)" if group in failed else ""),
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
                color=color(method),
                label=label(method),
            )
            ax.fill_between(
                s.index,
                s["mean"] - s["std"].fillna(0),
                s["mean"] + s["std"].fillna(0),
                color=color(method),
                alpha=0.2,
            )
        ax.set(xlabel="epoch", title=col)
    axes[0].legend(fontsize=7)
    return _save(fig, out, "training_curves")


def knowledge_scatter(files: list[Path], out: Path) -> list[Path]:
    reps = _representatives(files)
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
            color=color(method),
            label=label(method),
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
        axes[1].plot(p["rank"], p[method], color=color(method), label=label(method))
    axes[1].set(
        xscale="log",
        yscale="log",
        xlabel="rank of π̄_c",
        ylabel="mean |∂L/∂z_c|",
        title=f"per-class gradient, K = {len(p):,}",
    )
    axes[1].legend()
    return _save(fig, out, "gradient_analysis")


def token_gradients(profile_csv: Path, gate_csv: Path, out: Path) -> list[Path]:
    """The real-data diagnostic (``pipeline.stages.token_gradients``): mean |dL/dz_c| against
    the rank of pi_bar_c per method group (each normalised by its own total, so the shapes
    compare), and the share of tokens whose ensemble top class has a student logit below 0."""
    p, gate = pd.read_csv(profile_csv), pd.read_csv(gate_csv)
    groups = sorted(gate["group"], key=order)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    for g in groups:
        y = p[g] / p[g].sum()
        axes[0].plot(p["rank"], y, color=color(g), label=label(g), lw=1.3)
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="rank of π̄_c in the token (1 = ensemble's top class)",
        ylabel="mean |∂L/∂z_c| / Σ_c",
        title=f"where each loss puts its gradient (val tokens, V = {len(p):,})",
    )
    axes[0].legend(fontsize=7)
    g = gate.set_index("group").loc[groups]
    names = [label(x) for x in groups]
    bars = axes[1].barh(names, g["top_class_below_zero"], color=[color(x) for x in groups])
    for bar, share, top in zip(bars, g["top_class_below_zero"], g["mean_top_logit"], strict=True):
        axes[1].text(  # the value is written out: a share of 0 draws no bar
            max(share, 0) + 0.02,
            bar.get_y() + bar.get_height() / 2,
            f"{share:.3f} (mean top-class z {top:.1f})",
            va="center",
            fontsize=8,
        )
    axes[1].invert_yaxis()
    axes[1].set(xlim=(0, 1), xlabel="share of tokens", title="ensemble's top class has z < 0")
    fig.tight_layout()
    return _save(fig, out, "token_gradients")


def class_sweep(
    sweep_csv: Path, shares_csv: Path | None, out: Path, ood_set: str, measure: str
) -> list[Path]:
    """The class-count figure: student-vs-ensemble gaps against V, one line per method
    (mean ± std over seeds), and the synthetic gradient head share against K."""
    s = pd.read_csv(sweep_csv, keep_default_na=False)
    for col in ("mean", "std"):
        s[col] = pd.to_numeric(s[col].replace("", np.nan))
    test = s[s["split"] == "test"]
    ens_nll = test[(test["group"] == "ensemble") & (test["metric"] == "nll")].set_index("vocab")[
        "mean"
    ]
    methods = sorted(set(s["group"]) - {"member", "ensemble"}, key=order)
    panels = 4 if shares_csv is not None else 3
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
    if shares_csv is not None:
        head_share_panel(axes[3], shares_csv, title="gradient head share (synthetic)")
    fig.tight_layout()
    return _save(fig, out, "class_sweep")


def read_curves(files: list[Path]) -> pd.DataFrame:
    """The students' learning curves (``.../V<vocab>/students/<group>/seed<seed>/curve.csv``) as
    one frame with ``vocab``, ``group`` and ``seed`` columns."""
    frames = []
    for f in map(Path, files):
        vdir = next(p for p in reversed(f.parts) if p.startswith("V") and p[1:].isdigit())
        c = pd.read_csv(f)
        frames.append(c.assign(vocab=int(vdir[1:]), group=f.parent.parent.name, seed=f.parent.name))
    if not frames:
        raise ValueError("learning_curves: no curve.csv given (--curves)")
    return pd.concat(frames, ignore_index=True)


def learning_curves(files: list[Path], out: Path) -> list[Path]:
    """Validation top-1 agreement with the ensemble and NLL gap to it against training steps:
    a column per V, a line per method group (mean ± std over seeds); the dashed grey line is a
    single member's agreement (the convergence criterion's bar)."""
    d = read_curves(files)
    vocabs = sorted(d["vocab"].unique())
    rows = [
        ("val_agreement", "val top-1 agreement\nwith the ensemble"),
        ("val_nll_gap", "val NLL − ensemble NLL\n(nats/token)"),
    ]
    fig, axes = plt.subplots(
        len(rows), len(vocabs), figsize=(3.6 * len(vocabs), 3.0 * len(rows)), squeeze=False
    )
    for j, v in enumerate(vocabs):
        dv = d[d["vocab"] == v]
        for i, (col, ylabel) in enumerate(rows):
            ax = axes[i, j]
            for group in sorted(set(dv["group"]), key=order):
                g = dv[dv["group"] == group].groupby("step")[col].agg(["mean", "std"])
                ax.plot(g.index, g["mean"], color=color(group), label=label(group), lw=1.4)
                ax.fill_between(
                    g.index,
                    g["mean"] - g["std"].fillna(0),
                    g["mean"] + g["std"].fillna(0),
                    color=color(group),
                    alpha=0.2,
                )
            if col == "val_agreement":
                ax.axhline(
                    dv["member_agreement"].mean(),
                    color="gray",
                    ls="--",
                    lw=1,
                    label="single member",
                )
                ax.set_ylim(0, 1)
            else:
                ax.axhline(0.0, color="black", lw=0.8)
                hi = np.nanpercentile(dv[col], 95)  # a diverging start does not set the scale
                ax.set_ylim(min(0.0, float(dv[col].min())) - 0.05, max(hi, 0.1) * 1.1)
            ax.set(xlabel="training step" if i == len(rows) - 1 else None)
            if j == 0:
                ax.set_ylabel(ylabel)
            if i == 0:
                ax.set_title(f"V = {v:,}")
    handles = {}  # every group of every panel, once (a group may run at some V only)
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    axes[0, 0].legend(handles.values(), handles.keys(), fontsize=7)
    fig.tight_layout()
    return _save(fig, out, "learning_curves")


def _given(value, flag: str):
    if value is None:
        raise ValueError(f"class_sweep needs {flag} (config: figure.ood_set / figure.measure)")
    return value


def draw(task: str, out: Path, args: argparse.Namespace) -> list[Path]:
    """Every figure of ``task`` (its :class:`pipeline.tasks.TaskSpec`), from the given files."""
    _PALETTE.clear()
    _PALETTE.update(palette(run_groups(task, args)))
    makers = {
        "rejection_curves": lambda: rejection_curves(args.per_example, out),
        "ood_histograms": lambda: ood_histograms(args.per_example, out),
        "ood_examples": lambda: ood_examples(args.per_example, args.data_manifest, out),
        "reliability": lambda: reliability(args.per_example, out, args.ece_bins),
        "shift": lambda: shift(args.tidy, out),
        "training_curves": lambda: training_curves(args.histories, out),
        "knowledge_scatter": lambda: knowledge_scatter(args.per_example, out),
        "gradient_analysis": lambda: gradient_analysis(args.shares, args.profile, out),
        "class_sweep": lambda: class_sweep(
            args.sweep, args.shares, out, args.ood_set, args.measure
        ),
        "learning_curves": lambda: learning_curves(args.curves, out),
        "token_gradients": lambda: token_gradients(args.token_profile, args.token_gate, out),
    }
    return [p for name in tasks.spec(task).figures for p in makers[name]()]


def main() -> None:
    ap = argparse.ArgumentParser(description="Draw every figure of a run (rule figures)")
    ap.add_argument("--task", required=True, choices=sorted(tasks.TASKS))
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--per-example", nargs="*", type=Path, default=[], help="evaluation arrays")
    ap.add_argument("--tidy", type=Path, default=None, help="tables/metrics_tidy.csv")
    ap.add_argument(
        "--data-manifest", type=Path, default=None, help="data/manifest.json (OOD images)"
    )
    ap.add_argument("--histories", nargs="*", type=Path, default=[], help="students' history.csv")
    ap.add_argument("--shares", type=Path, default=None, help="gradient_analysis/head_share.csv")
    ap.add_argument("--profile", type=Path, default=None, help="gradient_analysis/rank_profile.csv")
    ap.add_argument("--sweep", type=Path, default=None, help="tables/sweep.csv")
    ap.add_argument("--curves", nargs="*", type=Path, default=[], help="students' curve.csv")
    ap.add_argument("--token-profile", type=Path, default=None, help="token_profile.csv")
    ap.add_argument("--token-gate", type=Path, default=None, help="token_gate.csv")
    ap.add_argument("--ece-bins", type=int, default=Mx.ECE_BINS)
    ap.add_argument("--ood-set", default=None, help="class_sweep: the OOD set drawn")
    ap.add_argument("--measure", default=None, help="class_sweep: the OOD score drawn")
    args = ap.parse_args()
    for p in draw(args.task, args.out, args):
        print(p)


if __name__ == "__main__":
    with reported():
        main()
