import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import load_file

from pipeline.maths import metrics as Mx
from pipeline.stages.evaluate import evaluate


def test_metrics_are_finite_and_in_range(evaluated):
    _, tables = evaluated
    for system, t in tables.items():
        assert np.isfinite(t["value"]).all(), system
        acc = t[(t["split"] == "test") & (t["metric"] == "accuracy")]["value"].item()
        assert 0 <= acc <= 1
        auroc = t[t["metric"] == "ood_auroc"]["value"]
        assert ((auroc >= 0) & (auroc <= 1)).all()
        assert set(t["split"]) == {"test", "ood_mnist", "ood_inverted", "shift"}


def test_per_example_arrays_reproduce_the_metrics(evaluated):
    d, tables = evaluated
    a = load_file(str(d / "ensemble" / "per_example.safetensors"))
    t = tables["ensemble"]
    acc = t[(t["split"] == "test") & (t["metric"] == "accuracy")]["value"].item()
    assert Mx.accuracy(a["test.probs"], a["test.label"]) == pytest.approx(acc, rel=1e-6)
    auroc = t[
        (t["metric"] == "ood_auroc") & (t["measure"] == "knowledge") & (t["split"] == "ood_mnist")
    ]["value"].item()
    assert Mx.ood_auroc(a["test.knowledge"], a["ood_mnist.knowledge"]) == pytest.approx(auroc)


def test_diversity_rows_match_the_members_and_the_per_example_scores(evaluated, cache):
    from itertools import combinations

    from pipeline.tasks.image import cache as C

    d, tables = evaluated
    t = tables["ensemble"]
    for split in ("test", "ood_mnist", "ood_inverted"):
        top = C.load_split(cache, split)["member_log_probs"].argmax(-1).numpy()  # [N, 3]
        pairs = [np.mean(top[:, i] != top[:, j]) for i, j in combinations(range(3), 2)]
        row = t[(t["split"] == split) & (t["metric"] == "disagreement")]["value"].item()
        assert row == pytest.approx(np.mean(pairs))
    shift = t[(t["split"] == "shift") & (t["metric"] == "disagreement")]
    assert sorted(shift["severity"]) == [1, 5]
    for system in ("pd_end2-seed0", "member-0"):
        a = load_file(str(d / system / "per_example.safetensors"))
        s = tables[system]
        assert "disagreement" not in set(s["metric"])
        rmi = s[(s["split"] == "ood_mnist") & (s["metric"] == "mean_rmi")]["value"].item()
        assert rmi == pytest.approx(float(np.mean(a["ood_mnist.rmi"])), rel=1e-5)


def test_single_members_have_no_knowledge_uncertainty(evaluated):
    d, _ = evaluated
    a = load_file(str(d / "member-0" / "per_example.safetensors"))
    assert np.all(a["test.knowledge"] == 0) and np.all(a["test.total"] > 0)


def test_metric_columns_and_student_checks(evaluated, prepared, cache, tmp_path):
    d, tables = evaluated
    cols = ["system", "group", "seed", "split", "metric", "measure", "corruption", "severity"]
    assert list(tables["pd_end2-seed0"].columns) == [*cols, "value"]
    assert set(tables["pd_end2-seed0"]["seed"]) == {0} and set(tables["ensemble"]["seed"]) == {-1}
    with pytest.raises(ValueError, match="give its weights"):
        evaluate("image", "end-seed0", prepared, cache, tmp_path / "x")
    with pytest.raises(ValueError, match="holds a pd_end2 student, not end"):
        evaluate(
            "image", "end-seed0", prepared, cache, tmp_path / "x", d / "student/model.safetensors"
        )


# ------------------------------------------------- every metric from the stored arrays (issue 31)
def _ece(conf, ok, bins):
    b = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    return sum(
        (b == i).sum() / len(conf) * abs(conf[b == i].mean() - ok[b == i].mean())
        for i in range(bins)
        if (b == i).any()
    )


def _prr(u, err):
    """Rejection ratio, ties rejected together at their mean error (random tie-breaking)."""
    n, e0 = len(u), err.mean()
    if e0 in (0.0, 1.0):
        return float("nan")
    left = [err.sum()]  # errors kept after rejecting 0, 1, ..., n examples
    for value in sorted(set(u.tolist()), reverse=True):
        group = err[u == value]
        for _ in range(len(group)):
            left.append(left[-1] - group.mean())
    curve = np.array(left) / n
    area = ((curve[1:] + curve[:-1]) / 2).sum() / n
    return (e0 / 2 - area) / (e0 / 2 - e0 * e0 / 2)


def _disagreement(mp):
    m = mp.shape[1]
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    return np.mean([(mp[:, i] != mp[:, j]).mean() for i, j in pairs])


def recompute(arrays: dict, split_info: dict, bins: int = Mx.ECE_BINS) -> dict:
    """Every metric of ``metrics.csv`` from the per-example arrays with numpy and sklearn alone
    (not pipeline.maths.metrics): ``(split, metric, measure, corruption, severity) -> value``;
    ``split_info``: the shift split's corruption, severity and the corruption names."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    a = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in arrays.items()}
    out = {}
    splits = sorted({k.split(".")[0] for k in a if k.endswith(".label")})
    known = ("total", "data", "knowledge", "epkl", "rmi", "neg_confidence")
    measures = sorted(
        k.split(".", 1)[1] for k in a if k.split(".", 1) in [["test", m] for m in known]
    )

    def quality(s, rows):
        ok = (a[f"{s}.pred"] == a[f"{s}.label"])[rows]
        conf = -a[f"{s}.neg_confidence"][rows]
        return ok.mean(), -a[f"{s}.log_p_label"][rows].mean(), _ece(conf, ok, bins)

    acc, nll, ece = quality("test", slice(None))
    onehot = np.eye(a["test.probs"].shape[1])[a["test.label"]]
    brier = ((a["test.probs"] - onehot) ** 2).sum(1).mean()
    for metric, v in (("accuracy", acc), ("nll", nll), ("ece", ece), ("brier", brier)):
        out[("test", metric, "", "", 0)] = v
    err = (a["test.pred"] != a["test.label"]).astype(float)
    for m in measures:
        out[("test", "prr", m, "", 0)] = _prr(a[f"test.{m}"], err)
    for s in splits:
        if s.startswith(("ood_", "shift_")):
            ref = f"test@{s}" if f"test@{s}.total" in a else "test"
            for m in measures:
                y = np.r_[np.zeros(len(a[f"{ref}.{m}"])), np.ones(len(a[f"{s}.{m}"]))]
                x = np.r_[a[f"{ref}.{m}"], a[f"{s}.{m}"]]
                out[(s, "ood_auroc", m, "", 0)] = roc_auc_score(y, x)
                out[(s, "ood_aupr", m, "", 0)] = average_precision_score(y, x)
        if s.startswith("shift_"):
            for metric, v in zip(("accuracy", "nll", "ece"), quality(s, slice(None)), strict=True):
                out[(s, metric, "", "", 0)] = v
        if s == "test" or s.startswith("ood_") or s.startswith("shift_"):
            out[(s, "mean_rmi", "", "", 0)] = a[f"{s}.rmi"].mean()
            if f"{s}.member_pred" in a:
                out[(s, "disagreement", "", "", 0)] = _disagreement(a[f"{s}.member_pred"])
    if "shift.label" in a:
        corr, sev, names = split_info["corruption"], split_info["severity"], split_info["names"]
        for v in np.unique(sev):
            at = sev == v
            out[("shift", "mean_rmi", "", "all", v)] = a["shift.rmi"][at].mean()
            if "shift.member_pred" in a:
                out[("shift", "disagreement", "", "all", v)] = _disagreement(
                    a["shift.member_pred"][at]
                )
            for c in [None, *np.unique(corr)]:
                rows = at & (True if c is None else corr == c)
                name = "all" if c is None else names[int(c)]
                for metric, value in zip(("accuracy", "nll", "ece"), quality("shift", rows),
                                         strict=True):  # fmt: skip
                    out[("shift", metric, "", name, v)] = value
            for m in measures:
                y = np.r_[np.zeros(len(a[f"test.{m}"])), np.ones(at.sum())]
                x = np.r_[a[f"test.{m}"], a[f"shift.{m}"][at]]
                out[("shift", "ood_auroc", m, "all", v)] = roc_auc_score(y, x)
    return out


def _shift_info(prepared):
    from pipeline.tasks.image.data import load_manifest, load_split

    manifest = load_manifest(prepared)
    if "shift" not in manifest["splits"]:
        return {}
    shift = load_split(prepared, "shift")
    names = manifest["corruptions"]
    return {"corruption": shift["corruption"].numpy(), "severity": shift["severity"].numpy(),
            "names": names}  # fmt: skip


def check_recomputed(metrics: pd.DataFrame, arrays: dict, info: dict, bins=Mx.ECE_BINS) -> int:
    """Every row of ``metrics`` equals its value recomputed from ``arrays``; returns the count."""
    again = recompute(arrays, info, bins)
    rows = 0
    for r in metrics.itertuples():
        key = (r.split, r.metric, r.measure if isinstance(r.measure, str) else "",
               r.corruption if isinstance(r.corruption, str) else "", int(r.severity))  # fmt: skip
        assert key in again, key
        want = again[key]
        if np.isnan(want):
            assert np.isnan(r.value), key
        else:
            assert r.value == pytest.approx(want, rel=1e-9, abs=1e-9), (key, r.value, want)
        rows += 1
    return rows


def test_every_metric_recomputes_from_the_stored_arrays(evaluated, prepared):
    """numpy + scikit-learn on per_example.safetensors give every value of metrics.csv, for the
    members, the ensemble and the student."""
    d, _ = evaluated
    info = _shift_info(prepared)
    for system in ("member-0", "ensemble", "pd_end2-seed0"):
        metrics = pd.read_csv(d / system / "metrics.csv", keep_default_na=False,
                              na_values=["nan", "NaN"])  # fmt: skip
        arrays = load_file(str(d / system / "per_example.safetensors"))
        assert check_recomputed(metrics, arrays, info) == len(metrics) > 50


class _FlatDirichlet(torch.nn.Module):
    """Logits ~20 on every class with float32-tiny differences per image: a Dirichlet so
    concentrated and flat that its measures are constant in float32 (PD-FKL on the default
    run), though not in float64."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(1e-7 * torch.randn(28 * 28, 10, generator=g))

    def forward(self, x):
        return 20.0 + x.flatten(1) @ self.w


def test_a_score_constant_where_it_is_stored_is_a_tie(prepared, cache, tmp_path):
    """A Dirichlet flat at float32 precision: every stored measure is one value, its OOD
    ROC-AUC is 0.5 and its PRR 0 (formerly 0.10 / 0.90 and -0.24, from float64 noise)."""
    from pipeline.tasks.image.evaluation import predictions

    meta = {"method": "pd_fkl", "options": {}, "config": {"workers": 0}}
    splits = ["test", "ood_mnist"]
    raw = predictions("pd_fkl", 0, prepared, cache, _FlatDirichlet(), meta,
                      torch.device("cpu"), splits)  # fmt: skip
    assert len(np.unique(raw["test"]["scores"]["total"].numpy())) > 1  # float64 noise exists
    from pipeline.tasks.image.evaluation import evaluate_system

    rows, arrays, _ = evaluate_system("pd_fkl", 0, prepared, cache, _FlatDirichlet(), meta, {})
    assert len(np.unique(arrays["test.total"].numpy())) == 1
    t = pd.DataFrame(rows)
    at = t[(t["measure"] == "total")]
    assert (at[at["metric"] == "ood_auroc"]["value"] == 0.5).all()
    assert at[at["metric"] == "prr"]["value"].abs().max() < 1e-12
