import numpy as np
import pytest
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
