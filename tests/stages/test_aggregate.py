"""Stage aggregate: the task's tables from tidy metrics, and the resource table."""

import json

import pandas as pd
import pytest

from pipeline.stages.aggregate import aggregate
from pipeline.tables import fmt_mean_std, read_tidy


def test_image_tables(evaluated, tmp_path):
    d, _ = evaluated
    files = sorted(d.glob("*/metrics.csv"))
    tables = aggregate("image", files, tmp_path)
    main = tables["main"].frame
    assert list(main.index) == ["Single model", "Ensemble", "PD-EnD²"]
    assert list(main.columns) == ["Acc", "NLL", "Brier", "ECE"]
    assert "±" in main.loc["Single model", "Acc"]  # two members -> mean ± std
    assert (tmp_path / "main.md").read_text().startswith("|")
    assert "\\begin{tabular}" in (tmp_path / "main.tex").read_text()
    tidy = pd.read_csv(tmp_path / "metrics_tidy.csv")
    assert set(tidy["system"]) == {"member-0", "member-1", "ensemble", "pd_end2-seed0"}


def test_diversity_table_has_a_row_per_set(evaluated, tmp_path):
    d, tables = evaluated
    div = aggregate("image", sorted(d.glob("*/metrics.csv")), tmp_path)["diversity"].frame
    assert list(div.index) == ["test", "mnist", "inverted", "shift s1", "shift s5"]
    assert list(div.columns) == [
        "members' pairwise disagreement",
        "Ensemble mean RMI",
        "PD-EnD² mean RMI",
    ]  # single members have RMI 0 everywhere: no column
    t = tables["ensemble"]
    value = t[(t["split"] == "ood_mnist") & (t["metric"] == "disagreement")]["value"].item()
    assert div.loc["mnist", "members' pairwise disagreement"] == fmt_mean_std(value, 0.0, 1)


def test_tidy_reading_and_formatting(tmp_path):
    (tmp_path / "m.csv").write_text("system,measure,value\nx,,0.5\ny,total,\n")
    t = read_tidy(tmp_path / "m.csv")
    assert t["measure"].tolist() == ["", "total"] and t["value"].isna().tolist() == [False, True]
    assert fmt_mean_std(0.5, 0.25, 2) == "0.500 ± 0.250"
    assert fmt_mean_std(0.5, 0.0, 1) == "0.500"
    assert fmt_mean_std(float("nan"), 0.0, 3) == "–"


def test_resource_table_names_jobs_from_explicit_records(evaluated, tmp_path):
    d, _ = evaluated
    root = tmp_path / "run"
    rec = root / "benchmarks" / "distill" / "end" / "seed0.resources.json"
    rec.parent.mkdir(parents=True)
    rec.write_text(json.dumps({"stage": "distill", "wall_s": 2.0, "samples": 10}))
    stray = root / "benchmarks" / "old.resources.json"  # not given: never read
    stray.write_text(json.dumps({"stage": "old"}))
    aggregate("image", sorted(d.glob("*/metrics.csv")), tmp_path / "t", resources=[rec], root=root)
    res = pd.read_csv(tmp_path / "t" / "resources.csv")
    assert res["job"].tolist() == ["distill/end/seed0"] and res["samples"].tolist() == [10]
    with pytest.raises(ValueError, match="unknown task"):
        aggregate("audio", [], tmp_path)
