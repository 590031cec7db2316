"""Token task evaluation: the per-token teacher cache of the evaluation splits
(``rule text_teacher``), per-system metrics (``rule text_evaluate``), the sweep tables
(``rule text_aggregate``) and the headline class-count figure (``rule text_figures``).

Per token (teacher forcing on the reference sequence) every system gives the log-probability
of the target, its top-1 prediction and the six uncertainty scores of
:data:`pipeline.evaluate.SCORES` (members and EnD: categorical; the ensemble: from its members;
EnD2 / PD-EnD2: from the student's Dirichlet). From them:

* test split, token level: accuracy, NLL, perplexity, top-1 agreement with the ensemble, PRR of
  every score for token errors;
* sequence level: each token score averaged over the sequence ("product of expectations") and
  the score ``seq_nll = -(1/L) ln P(y | x)``; OOD ROC-AUC / PR-AUC of each (OOD positive) for the
  test sequences against every ``ood_*`` split.

Metrics are tidy rows ``system, group, seed, vocab, split, metric, measure, value``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from pipeline import __version__
from pipeline import dirichlet as D
from pipeline import metrics as Mx
from pipeline import text_data as TD
from pipeline.distill import model_offset
from pipeline.evaluate import (
    GROUP_LABELS,
    GROUP_ORDER,
    SCORES,
    fmt_mean_std,
    parse_system,
    read_tidy,
)
from pipeline.io import atomic_save, atomic_write_text, sha256_file
from pipeline.lm import load_lm, trim

SEQ_SCORES = (*SCORES, "seq_nll")
SEQ_LABELS = {"seq_nll": "−(1/L) ln P(y|x)"}
KEY_MEASURES = ("total", "knowledge", "seq_nll")  # the short OOD table (``ood_main``)
SHORT = {"total": "TU", "knowledge": "MI", "seq_nll": "−lnP/L"}


def eval_splits(manifest: dict) -> list[str]:
    """The splits that are scored: ``test`` and every ``ood_*``."""
    return ["test"] + [s for s in manifest["splits"] if s.startswith("ood_")]


ROW_BLOCK = 1 << 18
"""Per-token measures work on row blocks of about this many logits (cache-sized)."""
_F64 = torch.float64


def _entropy(p: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """``-sum p ln p`` per row, float32 terms summed in float64."""
    return -(p * logp).sum(-1, dtype=_F64)


def _outputs(probs, logp, y, scores) -> dict[str, torch.Tensor]:
    out = {k: v.float() for k, v in scores.items()}
    out["logp_y"] = logp.gather(1, y[:, None])[:, 0].float()
    out["pred"] = probs.argmax(1).to(torch.int32)
    return out


def _cat(parts: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def categorical_tokens(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-token outputs of one categorical model (a member, EnD): TU = DU = H[p], no knowledge
    uncertainty (MI = EPKL = RMI = 0), as :func:`pipeline.evaluate._categorical`."""
    parts = []
    rows = max(1, ROW_BLOCK // logits.shape[1])
    for r in range(0, logits.shape[0], rows):
        logp = torch.log_softmax(logits[r : r + rows].float(), -1)
        p = logp.exp()
        h = _entropy(p, logp)
        zero = torch.zeros_like(h)
        scores = {"total": h, "data": h, "knowledge": zero, "epkl": zero, "rmi": zero}
        scores["neg_confidence"] = -p.amax(-1).double()
        parts.append(_outputs(p, logp, y[r : r + rows], scores))
    return _cat(parts)


def ensemble_tokens(member_logits: list[torch.Tensor], y: torch.Tensor) -> dict:
    """Per-token outputs of the ensemble of ``member_logits`` (``M`` tensors ``[T, V]``) with the
    measures of :func:`pipeline.uncertainty.ensemble_uncertainty`, computed in float32 terms with
    float64 sums over classes (a float64 pass over ``[T, M, V]`` made the V = 10,000 cache take
    minutes); MI and RMI in their KL forms, EPKL = MI + RMI."""
    m, (t, k) = len(member_logits), member_logits[0].shape
    rows = max(1, ROW_BLOCK // k)
    parts = []
    for r in range(0, t, rows):
        logps = [torch.log_softmax(z[r : r + rows].float(), -1) for z in member_logits]
        ps = [lp.exp() for lp in logps]
        pbar = torch.stack(ps).mean(0)
        log_pbar = torch.log(pbar)
        lbar = torch.stack(logps).mean(0)
        data = sum(_entropy(p, lp) for p, lp in zip(ps, logps, strict=True)) / m
        mi = sum((p * (lp - log_pbar)).sum(-1, dtype=_F64) for p, lp in zip(ps, logps, strict=True))
        mi = mi / m
        rmi = (pbar * (log_pbar - lbar)).sum(-1, dtype=_F64)
        scores = {
            "total": _entropy(pbar, log_pbar),
            "data": data,
            "knowledge": mi,
            "epkl": mi + rmi,
            "rmi": rmi,
            "neg_confidence": -pbar.amax(-1).double(),
        }
        parts.append(_outputs(pbar, log_pbar, y[r : r + rows], scores))
    return _cat(parts)


def dirichlet_tokens(logits: torch.Tensor, m_off: float, y: torch.Tensor) -> dict:
    """Per-token outputs of a Dirichlet student, ``alpha = exp(z) + m_off``: point prediction
    ``softmax(z)``, measures of :func:`pipeline.uncertainty.dirichlet_uncertainty` (float32
    digamma terms, float64 sums; alpha0 and EPKL = (K - 1) / alpha0 in float64)."""
    t, k = logits.shape
    rows = max(1, ROW_BLOCK // k)
    parts = []
    for r in range(0, t, rows):
        z = logits[r : r + rows].float()
        logp_point = torch.log_softmax(z, -1)
        p_point = logp_point.exp()
        alpha64 = D.student_alphas(logits[r : r + rows], m_off)
        a0 = alpha64.sum(-1)
        alpha = alpha64.float()
        p = (alpha64 / a0[:, None]).float()
        logp = torch.log(p)
        total = _entropy(p, logp)
        data = -(p * torch.digamma(alpha + 1.0)).sum(-1, dtype=_F64) + torch.digamma(a0 + 1.0)
        rmi = (p * (logp - torch.digamma(alpha))).sum(-1, dtype=_F64) + torch.digamma(a0)
        scores = {
            "total": total,
            "data": data,
            "knowledge": total - data,
            "epkl": (k - 1) / a0,
            "rmi": rmi,
            "neg_confidence": -p_point.amax(-1).double(),
        }
        parts.append(_outputs(p_point, logp_point, y[r : r + rows], scores))
    return _cat(parts)


def _batches(seqs: dict, batch: int):
    n = seqs["inputs"].shape[0]
    for i in range(0, n, batch):
        x = trim(seqs["inputs"][i : i + batch])
        y = seqs["targets"][i : i + batch, : x.shape[1]]
        yield x, y[y >= 0]


@torch.no_grad()
def build_teacher(
    data_dir: Path, vocab: int, member_paths: list[Path], out: Path, batch: int = 32
) -> dict:
    """Per-token outputs of every member and of the ensemble on the evaluation splits:
    ``out/{split}.safetensors`` with ``target``, ``seq`` (sequence index) and
    ``{system}.{logp_y, pred, <score>}``; ``out/manifest.json``."""
    manifest = TD.load_manifest(data_dir)
    loaded = [load_lm(p) for p in member_paths]
    members = [m for m, _ in loaded]
    for p, m in zip(member_paths, members, strict=True):
        if m.vocab_size != vocab:
            raise ValueError(f"member {p} has V={m.vocab_size}, expected {vocab}")
    names = [f"member-{meta['seed']}" for _, meta in loaded]  # systems are named by seed
    out.mkdir(parents=True, exist_ok=True)
    for split in eval_splits(manifest):
        seqs = TD.load_sequences(data_dir, split, vocab)
        parts: dict[str, list[torch.Tensor]] = {}
        for x, y in _batches(seqs, batch):
            z = [m(x) for m in members]
            rows = {"ensemble": ensemble_tokens(z, y)}
            for name, zj in zip(names, z, strict=True):
                rows[name] = categorical_tokens(zj, y)
            for system, d in rows.items():
                for key, v in d.items():
                    parts.setdefault(f"{system}.{key}", []).append(v)
            parts.setdefault("target", []).append(y.to(torch.int32))
        tensors = {k: torch.cat(v) for k, v in parts.items()}
        lengths = (seqs["targets"] >= 0).sum(1)
        tensors["seq"] = torch.repeat_interleave(torch.arange(len(lengths)), lengths).int()
        atomic_save(tensors, out / f"{split}.safetensors")
    info = {
        "code_version": __version__,
        "vocab": vocab,
        "members": [str(p) for p in member_paths],
        "member_sha256": [sha256_file(p) for p in member_paths],
        "splits": eval_splits(manifest),
    }
    atomic_write_text(json.dumps(info, indent=2), out / "manifest.json")
    return info


@torch.no_grad()
def student_outputs(model, meta: dict, seqs: dict, batch: int = 32) -> dict[str, torch.Tensor]:
    """Per-token outputs of a student (categorical for EnD, Dirichlet otherwise)."""
    group = meta["method"]
    m_off = model_offset(group, meta["options"])
    parts: dict[str, list] = {}
    for x, y in _batches(seqs, batch):
        z = model(x)
        out = categorical_tokens(z, y) if group == "end" else dirichlet_tokens(z, m_off, y)
        for k, v in out.items():
            parts.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in parts.items()}


def sequence_scores(tok: dict[str, torch.Tensor], seq: torch.Tensor) -> dict[str, np.ndarray]:
    """Each token score averaged over its sequence, and ``seq_nll = -mean ln p(y_t)``."""
    seq = seq.long()
    n = int(seq.max()) + 1
    counts = torch.bincount(seq, minlength=n).double()
    out = {}
    for name in SCORES:
        out[name] = (torch.bincount(seq, tok[name].double(), minlength=n) / counts).numpy()
    out["seq_nll"] = (torch.bincount(seq, -tok["logp_y"].double(), minlength=n) / counts).numpy()
    return out


def evaluate(
    system: str, data_dir: Path, teacher_dir: Path, vocab: int, out: Path, model_path=None
) -> pd.DataFrame:
    """Tidy metrics (and per-sequence scores, ``out/per_sequence.safetensors``) of one system."""
    info = json.loads((teacher_dir / "manifest.json").read_text())
    if int(info["vocab"]) != vocab:
        raise ValueError(f"teacher cache {teacher_dir} is for V={info['vocab']}, not {vocab}")
    group, seed = parse_system(system)
    model = meta = None
    if model_path is not None:
        model, meta = load_lm(model_path)
        if int(meta["vocab_size"]) != vocab:
            raise ValueError(f"{model_path} has V={meta['vocab_size']}, expected {vocab}")
    elif group not in ("member", "ensemble"):
        raise ValueError(f"system {system!r} needs --model")
    rows, per_seq = [], {}

    def add(split, metric, value, measure=""):
        rows.append({"split": split, "metric": metric, "measure": measure, "value": float(value)})

    for split in info["splits"]:
        cache = load_file(teacher_dir / f"{split}.safetensors")
        key = f"member-{seed}" if group == "member" else "ensemble"
        if model is None and f"{key}.pred" not in cache:
            raise ValueError(f"teacher cache {teacher_dir} has no outputs of {key}")
        if model is None:
            tok = {k.split(".", 1)[1]: v for k, v in cache.items() if k.startswith(f"{key}.")}
        else:
            tok = student_outputs(model, meta, TD.load_sequences(data_dir, split, vocab))
        y = cache["target"].long()
        if len(tok["pred"]) != len(y):
            raise ValueError(f"{split}: {len(tok['pred'])} token outputs for {len(y)} targets")
        seq = sequence_scores(tok, cache["seq"])
        per_seq.update({f"{split}.{k}": torch.from_numpy(v).float() for k, v in seq.items()})
        if split != "test":
            continue
        errors = (tok["pred"].long() != y).numpy()
        nll = float(-tok["logp_y"].double().mean())
        add(split, "accuracy", 1.0 - errors.mean())
        add(split, "nll", nll)
        add(split, "perplexity", np.exp(nll))
        add(split, "agreement", (tok["pred"] == cache["ensemble.pred"]).double().mean())
        for name in SCORES:
            add(split, "prr", Mx.prr(tok[name].numpy(), errors), measure=name)
    for split in info["splits"]:
        if split.startswith("ood_"):
            for name in SEQ_SCORES:
                s_in, s_out = per_seq[f"test.{name}"].numpy(), per_seq[f"{split}.{name}"].numpy()
                add(split, "ood_auroc", Mx.ood_auroc(s_in, s_out), measure=name)
                add(split, "ood_aupr", Mx.ood_aupr(s_in, s_out), measure=name)
    table = pd.DataFrame(rows)
    table.insert(0, "vocab", vocab)
    table.insert(0, "seed", -1 if seed is None else seed)
    table.insert(0, "group", group)
    table.insert(0, "system", system)
    out.mkdir(parents=True, exist_ok=True)
    atomic_save(per_seq, out / "per_sequence.safetensors")
    atomic_write_text(table.to_csv(index=False), out / "metrics.csv")
    return table


# ----------------------------------------------------------------------------- sweep
def speed_table(histories: list[Path]) -> pd.DataFrame:
    """Training throughput per V and method from the runs' ``history.csv`` (paths
    ``.../V{vocab}/members/...`` or ``.../V{vocab}/students/{method}/...``): target tokens per
    second of the training steps alone (validation excluded), mean over runs, and the ratio to
    cross-entropy training of the same model (the members)."""
    rows = []
    for path in histories:
        parts = Path(path).parts
        vdir = next(p for p in reversed(parts) if p.startswith("V") and p[1:].isdigit())
        i = parts.index(vdir)
        method = "cross_entropy" if parts[i + 1] == "members" else parts[i + 2]
        h = pd.read_csv(path)
        rows.append(
            {
                "vocab": int(vdir[1:]),
                "method": method,
                "tokens_per_s": h["train_tokens"].sum() / h["train_seconds"].sum(),
            }
        )
    t = pd.DataFrame(rows).groupby(["vocab", "method"])["tokens_per_s"].mean().reset_index()
    ce = t[t["method"] == "cross_entropy"].set_index("vocab")["tokens_per_s"]
    t["slowdown_vs_ce"] = ce.reindex(t["vocab"]).to_numpy() / t["tokens_per_s"]
    order = {g: i for i, g in enumerate(["cross_entropy", *GROUP_ORDER])}
    return t.sort_values(
        ["vocab", "method"], key=lambda c: c.map(order) if c.name == "method" else c
    )


def aggregate(
    metric_files: list[Path], out: Path, histories: list[Path] | None = None
) -> dict[str, pd.DataFrame]:
    """Tidy table of every system and V, ``sweep.csv`` (mean, std, n over seeds per V, group,
    split, metric, measure), per-V Markdown/CSV tables ``main``, ``prr``, ``ood`` (every
    measure), ``ood_main`` (TU, MI and -(1/L) ln P(y|x) only) and, given
    the training histories, ``speed`` (:func:`speed_table`)."""
    tidy = pd.concat([read_tidy(f) for f in metric_files], ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(tidy.to_csv(index=False), out / "metrics_tidy.csv")
    keys = ["vocab", "group", "split", "metric", "measure"]
    sweep = tidy.groupby(keys)["value"].agg(["mean", "std", "count"]).reset_index()
    sweep["std"] = sweep["std"].fillna(0.0)
    atomic_write_text(sweep.to_csv(index=False), out / "sweep.csv")
    order = {g: i for i, g in enumerate(GROUP_ORDER)}
    stats = zip(sweep["mean"], sweep["std"], sweep["count"], strict=True)
    sweep["text"] = [fmt_mean_std(m, s, n) for m, s, n in stats]

    def wide(rows: pd.DataFrame, column: pd.Series) -> pd.DataFrame:
        rows = rows.assign(column=column)
        w = rows.pivot_table(
            index=["vocab", "group"], columns="column", values="text", aggfunc="first"
        )
        w = w.reset_index()
        w["_o"] = w["group"].map(lambda g: order.get(g, 99))
        w = w.sort_values(["vocab", "_o"]).drop(columns="_o")
        w["group"] = w["group"].map(lambda g: GROUP_LABELS.get(g, g))
        return w.rename(columns={"vocab": "V", "group": "system"})[
            ["V", "system", *dict.fromkeys(column)]
        ]

    main_rows = sweep[(sweep["split"] == "test") & (sweep["metric"] != "prr")]
    labels = {"accuracy": "Acc", "nll": "NLL", "perplexity": "PPL", "agreement": "Agree"}
    tables = {"main": wide(main_rows, main_rows["metric"].map(labels))}
    prr_rows = sweep[sweep["metric"] == "prr"]
    tables["prr"] = wide(prr_rows, "PRR " + prr_rows["measure"])
    ood_rows = sweep[sweep["metric"] == "ood_auroc"]
    tables["ood"] = wide(
        ood_rows, ood_rows["split"].str.removeprefix("ood_") + " " + ood_rows["measure"]
    )
    key = ood_rows[ood_rows["measure"].isin(KEY_MEASURES)]
    tables["ood_main"] = wide(
        key, key["split"].str.removeprefix("ood_") + " " + key["measure"].map(SHORT)
    )
    if histories:
        tables["speed"] = speed_table(histories).round(3)
    for name, t in tables.items():
        atomic_write_text(t.to_csv(index=False), out / f"{name}.csv")
        atomic_write_text(t.to_markdown(index=False), out / f"{name}.md")
    return tables


def headline_figure(
    sweep_csv: Path, shares_csv: Path | None, out: Path, ood_set: str, measure: str
) -> list[Path]:
    """The class-count figure: student-vs-ensemble gaps against V, one line per method
    (mean ± std over seeds), and the synthetic gradient head share against K."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.figures import COLORS, MEASURE_LABELS, _save, head_share_panel

    s = pd.read_csv(sweep_csv, keep_default_na=False)
    for col in ("mean", "std"):
        s[col] = pd.to_numeric(s[col].replace("", np.nan))
    test = s[s["split"] == "test"]
    ens_nll = test[(test["group"] == "ensemble") & (test["metric"] == "nll")].set_index("vocab")[
        "mean"
    ]
    methods = [g for g in GROUP_ORDER if g in set(s["group"]) and g not in ("member", "ensemble")]
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
        lab, col = GROUP_LABELS.get(g, g), COLORS.get(g)
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
    ood = s[
        (s["split"] == f"ood_{ood_set}") & (s["metric"] == "ood_auroc") & (s["measure"] == measure)
    ]
    for g in ["ensemble", *methods]:
        style = "--" if g == "ensemble" else "-o"
        line(axes[2], ood[ood["group"] == g], GROUP_LABELS.get(g, g), COLORS.get(g), None, style)
    axes[2].set(
        ylabel=f"OOD ROC-AUC ({MEASURE_LABELS.get(measure, SEQ_LABELS.get(measure, measure))})",
        title=f"test vs {ood_set} sequences",
    )
    for ax in axes[:3]:
        ax.set(xscale="log", xlabel="number of classes V")
        ax.legend(fontsize=8)
    if shares_csv is not None:
        head_share_panel(axes[3], shares_csv, title="gradient head share (synthetic)")
    fig.tight_layout()
    return _save(fig, out, "class_sweep")


def main() -> None:
    ap = argparse.ArgumentParser(description="Text task: teacher cache, evaluation, sweep")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("teacher")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--vocab", type=int, required=True)
    t.add_argument("--members", type=Path, nargs="+", required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--threads", type=int, default=None)
    e = sub.add_parser("system")
    e.add_argument("--system", required=True)
    e.add_argument("--data", type=Path, required=True)
    e.add_argument("--teacher", type=Path, required=True)
    e.add_argument("--vocab", type=int, required=True)
    e.add_argument("--model", type=Path, default=None)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--threads", type=int, default=None)
    a = sub.add_parser("aggregate")
    a.add_argument("--metrics", type=Path, nargs="+", required=True)
    a.add_argument("--histories", type=Path, nargs="*", default=[])
    a.add_argument("--out", type=Path, required=True)
    f = sub.add_parser("figure")
    f.add_argument("--sweep", type=Path, required=True)
    f.add_argument("--shares", type=Path, default=None)
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--ood-set", default="permuted")
    f.add_argument("--measure", default="knowledge")
    args = ap.parse_args()
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if args.cmd == "teacher":
        build_teacher(args.data, args.vocab, args.members, args.out)
    elif args.cmd == "system":
        table = evaluate(args.system, args.data, args.teacher, args.vocab, args.out, args.model)
        print(table.to_string(index=False))
    elif args.cmd == "aggregate":
        for name, table in aggregate(args.metrics, args.out, args.histories).items():
            print(f"## {name}\n{table.to_markdown(index=False)}\n")
    else:
        headline_figure(args.sweep, args.shares, args.out, args.ood_set, args.measure)


if __name__ == "__main__":
    main()
