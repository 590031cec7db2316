import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from pipeline import distill as S
from pipeline import evaluate as E


def test_parse_system():
    assert E.parse_system("member-3") == ("member", 3)
    assert E.parse_system("ensemble") == ("ensemble", None)
    assert E.parse_system("pd_end2-seed12") == ("pd_end2", 12)
    with pytest.raises(ValueError, match="system name"):
        E.parse_system("teacher")


@pytest.fixture(scope="module")
def evaluated(prepared, cache, tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    student = d / "student" / "model.safetensors"
    S.distill(
        prepared,
        cache,
        {
            "method": "pd_end2",
            "options": {},
            "model": {"name": "small_cnn", "width": 8},
            "epochs": 6,
            "batch_size": 25,
            "lr": 0.02,
            "device": "cpu",
        },
        0,
        student,
        d / "c.pt",
        log=lambda s: None,
    )
    tables = {}
    for system, model in (
        ("member-0", None),
        ("member-1", None),
        ("ensemble", None),
        ("pd_end2-seed0", student),
    ):
        tables[system] = E.evaluate(system, prepared, cache, d / system, model)
    return d, tables


def test_metrics_are_finite_and_in_range(evaluated):
    _, tables = evaluated
    for system, t in tables.items():
        assert np.isfinite(t["value"]).all(), system
        acc = t[(t["split"] == "test") & (t["metric"] == "accuracy")]["value"].item()
        assert 0 <= acc <= 1
        auroc = t[t["metric"] == "ood_auroc"]["value"]
        assert ((auroc >= 0) & (auroc <= 1)).all()
        assert set(t["split"]) == {"test", "ood_mnist", "shift"}


def test_per_example_arrays_reproduce_the_metrics(evaluated):
    from pipeline import metrics as Mx

    d, tables = evaluated
    a = load_file(str(d / "ensemble" / "per_example.safetensors"))
    t = tables["ensemble"]
    acc = t[(t["split"] == "test") & (t["metric"] == "accuracy")]["value"].item()
    assert Mx.accuracy(a["test.probs"], a["test.label"]) == pytest.approx(acc, rel=1e-6)
    auroc = t[
        (t["metric"] == "ood_auroc") & (t["measure"] == "knowledge") & (t["split"] == "ood_mnist")
    ]["value"].item()
    assert Mx.ood_auroc(a["test.knowledge"], a["ood_mnist.knowledge"]) == pytest.approx(auroc)


def test_single_members_have_no_knowledge_uncertainty(evaluated):
    d, _ = evaluated
    a = load_file(str(d / "member-0" / "per_example.safetensors"))
    assert np.all(a["test.knowledge"] == 0) and np.all(a["test.total"] > 0)


def test_aggregate_tables(evaluated, tmp_path):
    d, _ = evaluated
    files = sorted(d.glob("*/metrics.csv"))
    tables = E.aggregate(files, tmp_path)
    main = tables["main"]
    assert list(main.index) == ["Single model", "Ensemble", "PD-EnD²"]
    assert list(main.columns) == ["Acc", "NLL", "Brier", "ECE"]
    assert "±" in main.loc["Single model", "Acc"]  # two members -> mean ± std
    assert (tmp_path / "main.md").read_text().startswith("|")
    assert "\\begin{tabular}" in (tmp_path / "main.tex").read_text()
    tidy = pd.read_csv(tmp_path / "metrics_tidy.csv")
    assert set(tidy["system"]) == {"member-0", "member-1", "ensemble", "pd_end2-seed0"}
