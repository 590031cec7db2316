"""Plotting shared by every task's figures (below the stages; matplotlib, no torch): saving a
figure as PNG and PDF atomically, the run's colours and labels, the evaluations a figure draws
one per group, the "failed" marking, and the figures of the synthetic gradient analysis, which
every task can draw.

A task's figures live in ``pipeline/tasks/<task>/figures.py`` and are listed in its spec's
figure registry (:class:`pipeline.figure_registry.Figure`); the stage ``figures`` draws them.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline import methods  # noqa: E402
from pipeline.io import atomic_path  # noqa: E402
from pipeline.methods import COLORS, label, order, parse_system  # noqa: E402

__all__ = [
    "FAILED_ERROR_RATIO",
    "MEASURE_LABELS",
    "color",
    "failed",
    "gradient_analysis",
    "head_share_panel",
    "label",
    "legend_outside",
    "learning_curves",
    "mean_band",
    "order",
    "outlier_limits",
    "palette",
    "read_curves",
    "read_sweep",
    "representatives",
    "save",
    "set_palette",
    "sweep_panel",
    "token_gradients",
]

MEASURE_LABELS = {
    "total": "total (TU)",
    "data": "data (DU)",
    "knowledge": "knowledge (MI)",
    "epkl": "EPKL",
    "rmi": "RMI",
    "neg_confidence": "−confidence",
    "seq_nll": "−(1/L) ln P(y|x)",
}
"""How each uncertainty score (:data:`pipeline.maths.uncertainty.SCORES`, and the tasks' own)
is named in a figure."""

FAILED_ERROR_RATIO = 3.0
"""A system whose test error exceeds this many times the ensemble's is marked as failed in the
figures (drawn, labelled with its accuracy, never setting the axes)."""

_PALETTE: dict[str, str] = {}
"""The run's colour per group (:func:`set_palette`)."""


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


def set_palette(groups) -> None:
    """Make :func:`palette` of ``groups`` the colours of the figures drawn next."""
    _PALETTE.clear()
    _PALETTE.update(palette(groups))


def color(group: str) -> str:
    """A group's colour in this run's figures: the run's palette, else :func:`methods.color`."""
    return _PALETTE.get(group) or methods.color(group)


def save(fig, out: Path, name: str) -> list[Path]:
    """``fig`` as ``<out>/<name>.png`` and ``.pdf`` (atomically: a killed job never leaves half
    a figure); closes it."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    try:
        for path, dpi in zip(paths, (130, None), strict=True):
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=path.suffix[1:], dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return paths


def representatives(files: list[Path]) -> dict[str, Path]:
    """One evaluation per group (the lowest seed), in display order; ``files`` are
    ``.../eval/<system>/<arrays file>``."""
    best: dict[str, tuple[int, Path]] = {}
    for path in sorted(map(Path, files)):
        group, seed = parse_system(path.parent.name)
        s = -1 if seed is None else seed
        if group not in best or s < best[group][0]:
            best[group] = (s, path)
    return {g: best[g][1] for g in sorted(best, key=order)}


def failed(base_error: dict[str, float]) -> set[str]:
    """The groups whose test error exceeds :data:`FAILED_ERROR_RATIO` times the ensemble's (the
    median group's where there is no ensemble)."""
    ref = base_error.get("ensemble", float(np.median(list(base_error.values()))))
    return {g for g, e in base_error.items() if e > FAILED_ERROR_RATIO * max(ref, 1e-12)}


def mean_band(ax, stats: pd.DataFrame, group: str, **line) -> None:
    """``stats["mean"]`` against its index as a line in ``group``'s colour and label (``line``:
    more line settings), with a band of ± ``stats["std"]`` (none where one seed gives no std)."""
    ax.plot(stats.index, stats["mean"], color=color(group), label=label(group), **line)
    std = stats["std"].fillna(0)
    ax.fill_between(
        stats.index, stats["mean"] - std, stats["mean"] + std, color=color(group), alpha=0.2
    )


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


def gradient_analysis(out: Path, shares: Path, profile: Path) -> list[Path]:
    """The synthetic gradient analysis (:mod:`pipeline.stages.gradient_analysis`): head share of
    ``sum_c |dL/dz_c|`` against K, and mean ``|dL/dz_c|`` against the rank of ``pi_bar_c``."""
    p = pd.read_csv(profile)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    head_share_panel(axes[0], shares)
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
    return save(fig, out, "gradient_analysis")


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


def learning_curves(out: Path, curves: list[Path], name: str = "learning_curves") -> list[Path]:
    """Validation top-1 agreement with the ensemble and NLL gap to it against training steps:
    a column per V, a line per method group (mean ± std over seeds); the dashed grey line is a
    single member's agreement (the convergence criterion's bar)."""
    d = read_curves(curves)
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
                mean_band(ax, g, group, lw=1.4)
            if col == "val_agreement":
                bar = dv["member_agreement"].mean()
                ax.axhline(bar, color="gray", ls="--", lw=1, label="single member")
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
    # every group of every panel once (a group may run at some V only), in the registry's
    # order with the member's bar last, outside the panels so that no legend hides a curve
    key = {label(g): (0, order(g)) for g in d["group"].unique()}
    right = 1 - 1.9 / fig.get_figwidth()
    legend_outside(fig, list(axes.flat), right, sort_key=lambda lab: key.get(lab, (1,)))
    return save(fig, out, name)


def token_gradients(
    out: Path, token_profile, token_gate, name: str = "token_gradients"
) -> list[Path]:
    """The real-data diagnostic (:mod:`pipeline.diagnostic`), from one ``(token_profile,
    token_gate)`` pair of files per V (a path or a list of paths each, in the same order): per
    V, mean |dL/dz_c| against the rank of pi_bar_c per method group (each normalised by its own
    total, so the shapes compare). At one V, beside it, the share of tokens whose ensemble top
    class has a student logit below 0 as bars; at several, that share and the head share of
    sum_c |dL/dz_c| against V, a line per group, the legend outside the panels."""
    profiles = [token_profile] if isinstance(token_profile, (str, Path)) else list(token_profile)
    gates = [token_gate] if isinstance(token_gate, (str, Path)) else list(token_gate)
    if len(profiles) != len(gates) or not profiles:
        raise ValueError(f"token_gradients: {len(profiles)} profiles for {len(gates)} gate tables")
    tables = [(pd.read_csv(a), pd.read_csv(b)) for a, b in zip(profiles, gates, strict=True)]
    runs = sorted(((len(p), p, g) for p, g in tables), key=lambda r: r[0])  # by V (= its ranks)
    many = len(runs) > 1
    widths = [3.0 if not many else 2.2] * len(runs) + ([2.0] if not many else [1.6, 1.6])
    fig, axes = plt.subplots(
        1, len(widths), figsize=(3.7 * sum(widths) / 1.5 + (2.0 if many else 0), 3.8),
        gridspec_kw={"width_ratios": widths}, squeeze=False,
    )  # fmt: skip
    axes = axes[0]
    for ax, (vocab, p, gate) in zip(axes, runs, strict=False):
        for g in sorted(gate["group"], key=order):
            ax.plot(p["rank"], p[g] / p[g].sum(), color=color(g), label=label(g), lw=1.3)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="rank of π̄_c in the token (1 = ensemble's top class)",
            ylabel="mean |∂L/∂z_c| / Σ_c",
            title=f"where each loss puts its gradient (val tokens, V = {vocab:,})"
            if not many
            else f"gradient by rank, V = {vocab:,} (val tokens)",
        )
    if not many:
        vocab, p, gate = runs[0]
        axes[0].legend(fontsize=7)
        groups = sorted(gate["group"], key=order)
        g = gate.set_index("group").loc[groups]
        names = [label(x) for x in groups]
        bars = axes[1].barh(names, g["top_class_below_zero"], color=[color(x) for x in groups])
        for bar, share, top in zip(
            bars, g["top_class_below_zero"], g["mean_top_logit"], strict=True
        ):
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
        return save(fig, out, name)
    table = pd.concat([gate.assign(vocab=vocab) for vocab, _, gate in runs], ignore_index=True)
    vocabs = [vocab for vocab, _, _ in runs]
    for ax, column, title in (
        (axes[-2], "head_share", "head share of Σ_c |∂L/∂z_c|"),
        (axes[-1], "top_class_below_zero", "share of tokens whose top class has z < 0"),
    ):
        for g in sorted(set(table["group"]), key=order):
            rows = table[table["group"] == g].sort_values("vocab")
            ax.plot(rows["vocab"], rows[column], "-o", ms=4, color=color(g), label=label(g))
        ax.set(xscale="log", xlabel="number of classes V", ylim=(-0.03, 1.03), title=title)
        ax.set_xticks(vocabs, [f"{v:,}" for v in vocabs])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    legend_outside(fig, axes, right=0.86)
    return save(fig, out, name)


def read_sweep(sweep: Path) -> pd.DataFrame:
    """A sweep table (``tables/sweep.csv``) with numeric ``mean``/``std`` (NaN where empty)."""
    s = pd.read_csv(sweep, keep_default_na=False)
    for col in ("mean", "std"):
        s[col] = pd.to_numeric(s[col].replace("", np.nan))
    return s


def outlier_limits(values, reference) -> tuple[float, float]:
    """An axis range holding the ``reference`` values (member band, ensemble) and ``values``
    but outliers: beyond Tukey's far-out fence, 3 spreads (interquartile range of all, or the
    references' range if larger) outside the quartiles. A method failing as a group (EnD² at 1
    BLEU, the rest at 4-6) sets the axis; a lone 1.7 nats amid gaps < 0.2 is drawn at the edge."""
    ref = np.asarray(reference, dtype=float)
    ref = ref[np.isfinite(ref)]
    vals = np.asarray(values, dtype=float)
    vals = vals[np.isfinite(vals)]
    pool = np.concatenate([ref, vals])
    if not len(pool):
        return -1.0, 1.0
    q1, q3 = (float(q) for q in np.percentile(pool, [25, 75]))
    lo, hi = (float(ref.min()), float(ref.max())) if len(ref) else (q1, q3)
    span = max(q3 - q1, hi - lo, 1e-3 * max(abs(hi), 1.0), 0.02 * abs(hi))
    fence = (min(q1, lo) - 3 * span, max(q3, hi) + 3 * span)
    inside = vals[(vals >= fence[0]) & (vals <= fence[1])]
    if len(inside):
        lo, hi = min(lo, float(inside.min())), max(hi, float(inside.max()))
    pad = 0.08 * (hi - lo or 1.0)
    return lo - pad, hi + pad


def sweep_panel(ax, rows: pd.DataFrame, groups, ylabel: str, shift=None, ensemble=True) -> None:
    """One metric of a class-count sweep against V (``rows``: sweep rows of one split and
    metric): a single member's mean ± std as a grey band, the ensemble as a black line (if
    ``ensemble``), one line per student group of ``groups`` (mean ± std over seeds). ``shift``
    (V -> value) is subtracted from every line (a gap to the ensemble). The y-range is
    :func:`outlier_limits`'; an outlier is drawn at the edge with its value written beside it."""

    def values(r):
        y = r["mean"].to_numpy(dtype=float)
        return y - shift.reindex(r["vocab"]).to_numpy() if shift is not None else y

    ref = []
    member = rows[rows["group"] == "member"].sort_values("vocab")
    if len(member):
        m, sd = values(member), member["std"].fillna(0).to_numpy()
        ax.fill_between(member["vocab"], m - sd, m + sd, color="0.85", label="single member ± std")
        ax.plot(member["vocab"], m, color="0.45", lw=1.2, ls="--")
        ref += [*(m - sd), *(m + sd)]
    ens = rows[rows["group"] == "ensemble"].sort_values("vocab")
    if ensemble and len(ens):
        ax.plot(ens["vocab"], values(ens), "k-s", ms=4, lw=1.4, label="ensemble")
        ref += list(values(ens))
    students = rows[rows["group"].isin(list(groups))]
    lines = {g: students[students["group"] == g].sort_values("vocab") for g in groups}
    every = np.concatenate([values(r) for r in lines.values() if len(r)] or [np.array([])])
    lo, hi = outlier_limits(every, ref)
    marked: dict[tuple, int] = {}  # outliers already written at (V, edge): stack their labels
    for g, r in lines.items():
        if not len(r):
            continue
        y = values(r)
        clipped = np.clip(y, lo, hi)
        ax.errorbar(r["vocab"], clipped, yerr=r["std"].fillna(0), fmt="-o", ms=4, capsize=3,
                    color=color(g), label=label(g))  # fmt: skip
        for x, yv, c in zip(r["vocab"], y, clipped, strict=True):
            if yv != c:  # an outlier: marked at the edge, its value written out
                low = c == lo
                k = marked[x, low] = marked.get((x, low), -1) + 1
                ax.plot([x], [c], marker="v" if low else "^", color=color(g), ms=9)
                dy = 4 + 9 * k if low else -10 - 9 * k
                end = x == rows["vocab"].max()  # at the right edge: written left of the mark
                ax.annotate(f"{yv:.2f}", (x, c), textcoords="offset points", fontsize=7,
                            xytext=(-7 if end else 5, dy), ha="right" if end else "left",
                            color=color(g))  # fmt: skip
    vocabs = sorted(set(rows["vocab"]))
    ax.set(xscale="log", xlabel="number of classes V", ylabel=ylabel, ylim=(lo, hi))
    ax.set_xticks(vocabs, [f"{int(v):,}" for v in vocabs])
    ax.minorticks_off()
    ax.grid(alpha=0.3)


def legend_outside(fig, axes, right: float = 0.80, sort_key=None) -> None:
    """One legend of every labelled line of ``axes`` (each label once), right of the panels;
    in order of appearance, or sorted by ``sort_key`` (label -> key) if given."""
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    if sort_key is not None:
        handles = {lab: handles[lab] for lab in sorted(handles, key=sort_key)}
    fig.legend(handles.values(), handles.keys(), loc="center left",
               bbox_to_anchor=(right, 0.5), fontsize=8, frameon=False)  # fmt: skip
    fig.tight_layout(rect=(0, 0, right, 1))
