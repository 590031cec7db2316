"""Evaluation (``rule evaluate``, one job per system) and tables (``rule aggregate``).

Systems: ``member-<seed>`` (one ensemble member), ``ensemble`` (read from the teacher cache:
no member is re-run), ``<method>-seed<seed>`` (a student, run over the prepared splits).

Point prediction: softmax(z) for a student, pi_bar for the ensemble. Uncertainty measures
(``pipeline.uncertainty``): ensemble measures for the ensemble, Dirichlet measures of
``alpha = exp(z) + m_off`` for EnD2/PD-EnD2/PD-FKL students (their training offset), categorical
ones (TU = DU, MI = EPKL = RMI = 0) for single members and EnD students. ``confidence`` is the
max of the point prediction in every case (the quantity ECE calibrates).

Per system: ``metrics.csv`` (tidy: split, metric, measure, corruption, severity, value) and
``per_example.safetensors`` (``<split>.<measure>``, ``<split>.pred``, ``<split>.label``,
``test.probs``) so anyone can recompute every number.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import data as D
from pipeline import metrics as Mx
from pipeline import teacher as T
from pipeline.dirichlet import student_alphas
from pipeline.distill import model_offset
from pipeline.io import atomic_save, atomic_write_text
from pipeline.models import load_trained
from pipeline.resources import ResourceRecord
from pipeline.train import predict_logits, select_device, set_threads
from pipeline.uncertainty import dirichlet_uncertainty, ensemble_uncertainty, scores

SCORES = ("total", "data", "knowledge", "epkl", "rmi", "neg_confidence")
GROUP_ORDER = ["member", "ensemble", "end", "end2", "pd_end2", "pd_fkl"]
GROUP_LABELS = {
    "member": "Single model",
    "ensemble": "Ensemble",
    "end": "EnD",
    "end2": "EnD²",
    "pd_end2": "PD-EnD²",
    "pd_fkl": "PD-FKL",
}


def parse_system(system: str) -> tuple[str, int | None]:
    """``member-3`` -> (``member``, 3); ``ensemble`` -> (``ensemble``, None);
    ``pd_end2-seed1`` -> (``pd_end2``, 1)."""
    if system == "ensemble":
        return "ensemble", None
    if system.startswith("member-"):
        return "member", int(system.split("-", 1)[1])
    if "-seed" in system:
        method, seed = system.rsplit("-seed", 1)
        return method, int(seed)
    raise ValueError(f"cannot parse system name {system!r}")


def _categorical(probs: torch.Tensor) -> dict[str, torch.Tensor]:
    return ensemble_uncertainty(probs[:, None, :])


def _measure(raw: torch.Tensor, group: str, m_off: float, mask: list[int] | None) -> dict:
    """``probs`` and uncertainty ``scores`` from member log-probs ``[N, M, K]`` (single member
    or ensemble) or student logits ``[N, K]``, restricted to the classes in ``mask`` (their
    distribution renormalised over them) when given."""
    if mask is not None:
        raw = raw[..., mask]
    if group in ("member", "ensemble"):
        members = torch.softmax(raw, -1)  # [N, M, K]
        probs = members.mean(1)
        u = ensemble_uncertainty(members) if group == "ensemble" else _categorical(probs)
    else:
        probs = torch.softmax(raw, -1)
        if group == "end":
            u = _categorical(probs)
        else:
            u = dirichlet_uncertainty(student_alphas(raw, m_off))
            u["confidence"] = probs.amax(-1)
    return {"probs": probs, "scores": scores(u)}


def predictions(
    system: str,
    data_dir: Path,
    cache_dir: Path,
    model_path: Path | None,
    device: torch.device,
    splits: list[str],
    masks: dict[str, list[int] | None] | None = None,
) -> dict[str, dict]:
    """Per split: ``probs [N, K]`` (float64) and the uncertainty ``scores`` (``[N]`` each).

    Members and the ensemble come from the teacher cache; students are run. A split with a
    class mask (ImageNet-A/-R/-O: 200 of 1000 classes) is scored on those classes only, and an
    OOD split's in-distribution reference ``test@<split>`` under the same mask."""
    group, seed = parse_system(system)
    manifest = T.validate(cache_dir, data_dir)
    masks = masks or {}
    raw, m_off, model = {}, 0.0, None
    if group not in ("member", "ensemble"):
        model, meta = load_trained(model_path)
        m_off = model_offset(group, meta["options"])
        workers = int(meta["config"].get("workers", 0))
    for split in splits:
        if model is None:
            c = T.load_split(cache_dir, split)
            if "member_log_probs" not in c:
                raise ValueError(f"teacher cache split {split!r} has no member log-probs")
            lp = c["member_log_probs"].double()  # [N, M, K]
            if group == "member":
                lp = lp[:, [manifest["member_seeds"].index(seed)]]
            raw[split] = lp
        else:
            images = D.load_split(data_dir, split)["images"]
            raw[split] = predict_logits(model, images, device, workers=workers).double()
    out = {s: _measure(raw[s], group, m_off, masks.get(s)) for s in splits}
    for s in splits:
        if s.startswith("ood_") and masks.get(s) is not None:
            out[f"test@{s}"] = _measure(raw["test"], group, m_off, masks[s])
    return out


def evaluate(
    system: str,
    data_dir: Path,
    cache_dir: Path,
    out_dir: Path,
    model_path: Path | None = None,
    ece_bins: int = 10,
    device: torch.device | None = None,
) -> pd.DataFrame:
    device = device or torch.device("cpu")
    data_manifest = D.load_manifest(data_dir)
    splits = [s for s in data_manifest["splits"] if s not in ("train", "val")]
    masks = {s: data_manifest["splits"][s].get("class_mask") for s in splits}
    preds = predictions(system, data_dir, cache_dir, model_path, device, splits, masks)
    rows: list[dict] = []

    def add(split, metric, value, measure="", corruption="", severity=0):
        rows.append(
            {
                "split": split,
                "metric": metric,
                "measure": measure,
                "corruption": corruption,
                "severity": severity,
                "value": float(value),
            }
        )

    arrays: dict[str, torch.Tensor] = {}
    labels = {}
    for s in splits:
        y = D.load_split(data_dir, s)["labels"].numpy()
        if masks[s] is not None:  # labels index the masked (renormalised) classes
            y = np.searchsorted(np.asarray(masks[s]), y)
        labels[s] = y
    for split in splits:
        probs = preds[split]["probs"].numpy()
        pred = probs.argmax(1)
        arrays[f"{split}.pred"] = torch.from_numpy(pred)
        arrays[f"{split}.label"] = torch.from_numpy(labels[split])
        for name, v in preds[split]["scores"].items():
            arrays[f"{split}.{name}"] = v.float()
    # in-distribution test set
    p, y = preds["test"]["probs"].numpy(), labels["test"]
    arrays["test.probs"] = torch.from_numpy(p).float()
    add("test", "accuracy", Mx.accuracy(p, y))
    add("test", "nll", Mx.nll(p, y))
    add("test", "brier", Mx.brier(p, y))
    add("test", "ece", Mx.ece(p, y, ece_bins))
    errors = p.argmax(1) != y
    for name in SCORES:
        add("test", "prr", Mx.prr(preds["test"]["scores"][name].numpy(), errors), measure=name)
    # labelled shift sets (e.g. ImageNet-A/-R): accuracy and calibration on them
    for split in splits:
        if split.startswith("shift_"):
            p, y = preds[split]["probs"].numpy(), labels[split]
            add(split, "accuracy", Mx.accuracy(p, y))
            add(split, "nll", Mx.nll(p, y))
            add(split, "ece", Mx.ece(p, y, ece_bins))
    # OOD detection: ID test (under the OOD set's class mask, if any) vs each OOD or labelled
    # shift set, OOD positive
    for split in splits:
        if split.startswith(("ood_", "shift_")):
            ref = f"test@{split}" if f"test@{split}" in preds else "test"
            for name in SCORES:
                s_in = preds[ref]["scores"][name].numpy()
                s_out = preds[split]["scores"][name].numpy()
                add(split, "ood_auroc", Mx.ood_auroc(s_in, s_out), measure=name)
                add(split, "ood_aupr", Mx.ood_aupr(s_in, s_out), measure=name)
    # shifted sets: per corruption and severity, and per severity over all corruptions
    if "shift" in splits:
        sd = D.load_split(data_dir, "shift")
        corr, sev = sd["corruption"].numpy(), sd["severity"].numpy()
        p, y = preds["shift"]["probs"].numpy(), labels["shift"]
        names = data_manifest["corruptions"]
        for s in np.unique(sev):
            for ci in [None, *np.unique(corr)]:
                mask = (sev == s) & (True if ci is None else corr == ci)
                cname = "all" if ci is None else names[int(ci)]
                add(
                    "shift",
                    "accuracy",
                    Mx.accuracy(p[mask], y[mask]),
                    corruption=cname,
                    severity=int(s),
                )
                add(
                    "shift",
                    "ece",
                    Mx.ece(p[mask], y[mask], ece_bins),
                    corruption=cname,
                    severity=int(s),
                )
                add("shift", "nll", Mx.nll(p[mask], y[mask]), corruption=cname, severity=int(s))
            # shift as OOD: clean test vs this severity (all corruptions), per measure
            for name in SCORES:
                s_in = preds["test"]["scores"][name].numpy()
                s_out = preds["shift"]["scores"][name].numpy()[sev == s]
                add(
                    "shift",
                    "ood_auroc",
                    Mx.ood_auroc(s_in, s_out),
                    measure=name,
                    corruption="all",
                    severity=int(s),
                )
    group, seed = parse_system(system)
    table = pd.DataFrame(rows)
    table.insert(0, "seed", -1 if seed is None else seed)
    table.insert(0, "group", group)
    table.insert(0, "system", system)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_save(arrays, out_dir / "per_example.safetensors")
    atomic_write_text(table.to_csv(index=False), out_dir / "metrics.csv")
    return table


# ----------------------------------------------------------------------------- aggregate
def fmt_mean_std(mean: float, std: float, n: int) -> str:
    """``mean ± std`` (3 decimals) over ``n`` seeds; the mean alone for one; ``–`` for NaN."""
    if np.isnan(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}"


def read_tidy(path: str | Path) -> pd.DataFrame:
    """A tidy metrics CSV: empty measure/corruption stay strings, values are floats (an
    undefined metric, e.g. PRR without errors, is NaN)."""
    t = pd.read_csv(path, keep_default_na=False)
    t["value"] = pd.to_numeric(t["value"].replace("", np.nan))
    return t


def resources_table(directory: Path | None) -> pd.DataFrame:
    """One row per job that left a ``*.resources.json`` record below ``directory``."""
    rows = []
    for path in sorted(directory.rglob("*.resources.json")) if directory else []:
        rec = json.loads(path.read_text())
        job = str(path.relative_to(directory)).removesuffix(".resources.json")
        rows.append({"job": job, **rec})
    cols = [
        "job",
        "stage",
        "wall_s",
        "device",
        "device_name",
        "threads",
        "peak_gpu_mem_mb",
        "peak_rss_mb",
        "samples",
        "samples_per_s",
    ]
    return pd.DataFrame(rows, columns=cols)


def aggregate(
    metric_files: list[Path], out_dir: Path, resources_dir: Path | None = None
) -> dict[str, pd.DataFrame]:
    """Tidy table of everything + summary tables (rows = systems, columns = metrics,
    mean ± std over seeds) as CSV, Markdown and LaTeX, and the jobs' resource table."""
    tidy = pd.concat([read_tidy(f) for f in metric_files], ignore_index=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(tidy.to_csv(index=False), out_dir / "metrics_tidy.csv")
    order = {g: i for i, g in enumerate(GROUP_ORDER)}

    def summarise(df: pd.DataFrame, column: pd.Series) -> pd.DataFrame:
        df = df.assign(column=column)
        g = df.groupby(["group", "column"])["value"].agg(["mean", "std", "count"]).reset_index()
        g["std"] = g["std"].fillna(0.0)
        stats = zip(g["mean"], g["std"], g["count"], strict=True)
        g["text"] = [fmt_mean_std(m, s, n) for m, s, n in stats]
        wide = g.pivot(index="group", columns="column", values="text")
        wide = wide.loc[sorted(wide.index, key=lambda x: order.get(x, 99))]
        wide.index = [GROUP_LABELS.get(i, i) for i in wide.index]
        return wide[list(dict.fromkeys(column))]

    main_rows = tidy[(tidy["split"] == "test") & (tidy["metric"] != "prr")]
    labels = {"accuracy": "Acc", "nll": "NLL", "brier": "Brier", "ece": "ECE"}
    main = summarise(main_rows, main_rows["metric"].map(labels))
    prr_rows = tidy[tidy["metric"] == "prr"]
    prr = summarise(prr_rows, "PRR " + prr_rows["measure"])
    ood_rows = tidy[
        (tidy["metric"] == "ood_auroc")
        & ((tidy["split"] != "shift") | (tidy["severity"] == tidy["severity"].max()))
    ]
    sev = np.where(ood_rows["split"] == "shift", " s" + ood_rows["severity"].astype(str), "")
    ood = summarise(
        ood_rows, ood_rows["split"].str.removeprefix("ood_") + sev + " AUROC " + ood_rows["measure"]
    )
    shift_rows = tidy[
        (tidy["split"] == "shift")
        & (tidy["corruption"] == "all")
        & tidy["metric"].isin(["accuracy", "ece"])
    ]
    shift = summarise(shift_rows, shift_rows["metric"] + " s" + shift_rows["severity"].astype(str))
    sets_rows = tidy[
        tidy["split"].str.startswith("shift_") & tidy["metric"].isin(["accuracy", "nll", "ece"])
    ]
    shift_sets = (
        summarise(
            sets_rows,
            sets_rows["split"].str.removeprefix("shift_") + " " + sets_rows["metric"].map(labels),
        )
        if len(sets_rows)
        else pd.DataFrame({"note": ["this experiment has no labelled shift sets"]})
    )
    tables = {"main": main, "prr": prr, "ood": ood, "shift": shift, "shift_sets": shift_sets}
    atomic_write_text(
        resources_table(resources_dir).to_csv(index=False, float_format="%.4g"),
        out_dir / "resources.csv",
    )
    for name, t in tables.items():
        atomic_write_text(t.to_csv(), out_dir / f"{name}.csv")
        atomic_write_text(t.to_markdown(), out_dir / f"{name}.md")
        atomic_write_text(t.to_latex(escape=True), out_dir / f"{name}.tex")
    return tables


def main() -> None:
    ap = argparse.ArgumentParser(description="Evaluate one system (rule evaluate) or aggregate")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ev = sub.add_parser("system")
    ev.add_argument("--system", required=True)
    ev.add_argument("--data", required=True, type=Path)
    ev.add_argument("--teacher", required=True, type=Path)
    ev.add_argument("--model", type=Path, default=None)
    ev.add_argument("--out", required=True, type=Path)
    ev.add_argument("--config-json", default="{}")
    ev.add_argument("--threads", type=int, default=None)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--resources-json", type=Path, default=None)
    ag = sub.add_parser("aggregate")
    ag.add_argument("--metrics", nargs="+", type=Path, required=True)
    ag.add_argument("--out", required=True, type=Path)
    ag.add_argument(
        "--resources-dir",
        type=Path,
        default=None,
        help="directory searched for the stages' *.resources.json records",
    )
    args = ap.parse_args()
    if args.cmd == "system":
        set_threads(args.threads)
        cfg = json.loads(args.config_json)
        device = select_device(args.device)
        with ResourceRecord(args.resources_json, "evaluate", device) as rec:
            table = evaluate(
                args.system,
                args.data,
                args.teacher,
                args.out,
                args.model,
                int(cfg.get("ece_bins", 10)),
                device,
            )
            manifest = D.load_manifest(args.data)
            rec.samples = sum(
                e["n"] for k, e in manifest["splits"].items() if k not in ("train", "val")
            )
        print(table[table["split"] == "test"].to_string(index=False))
    else:
        for name, t in aggregate(args.metrics, args.out, args.resources_dir).items():
            print(f"\n## {name}\n{t.to_markdown()}")


if __name__ == "__main__":
    main()
