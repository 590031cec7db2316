"""Stage lr_search: each method group's rate chosen on validation, and read back by distill."""

import json

import pandas as pd
import pytest

from pipeline.io import ArtifactError
from pipeline.stages import lr_search as L
from pipeline.stages.distill import read_choice


def _history(path, agreement, nll):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {"epoch": [1, 2], "val_agreement": [0.1, agreement], "val_nll": [9.0, nll]}
    ).to_csv(path, index=False)
    return path


def test_the_best_final_agreement_wins_then_nll_then_the_smaller_rate(tmp_path):
    trials = {
        0.001: _history(tmp_path / "a.csv", 0.70, 5.0),
        0.003: _history(tmp_path / "b.csv", 0.80, 5.0),
        0.01: _history(tmp_path / "c.csv", float("nan"), float("nan")),  # diverged
    }
    info = L.choose("end", trials)
    assert info["lr"] == 0.003 and info["group"] == "end" and info["metric"] == "val_agreement"
    assert info["edge"] is None  # inside the grid
    assert [t["lr"] for t in info["trials"]] == [0.001, 0.003, 0.01]
    tie = {0.01: _history(tmp_path / "d.csv", 0.8, 4.0), 0.003: trials[0.003]}
    assert L.choose("end", tie)["lr"] == 0.01  # same agreement, lower NLL
    same = {0.01: _history(tmp_path / "e.csv", 0.8, 5.0), 0.003: trials[0.003]}
    assert L.choose("end", same)["lr"] == 0.003  # a full tie: the smaller rate
    assert L.choose("end", same)["edge"] == "lower" and L.choose("end", tie)["edge"] == "upper"
    with pytest.raises(ValueError, match="no trial has a finite val_agreement"):
        L.choose("end", {0.01: trials[0.01]})


def test_distill_reads_only_its_own_groups_positive_rate(tmp_path):
    path = tmp_path / "choice.json"
    path.write_text(json.dumps(L.choose("pd_end2", {0.002: _history(tmp_path / "h.csv", 0.5, 5)})))
    assert read_choice(path, "pd_end2") == 0.002
    with pytest.raises(ArtifactError, match="choice of 'pd_end2', not 'end'.*lr_choice"):
        read_choice(path, "end")
    path.write_text(json.dumps({"group": "end", "lr": -1}))
    with pytest.raises(ArtifactError, match="no positive learning rate"):
        read_choice(path, "end")
    path.write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_choice(path, "end")


def test_table_lists_every_trial_and_marks_the_choice(tmp_path):
    files = []
    for group, rates in (("pd_end2_moff0", (0.01, 0.003)), ("end", (0.01, 0.003))):
        trials = {r: _history(tmp_path / group / f"{r}.csv", 0.5 + r, 5.0) for r in rates}
        files.append(tmp_path / group / "choice.json")
        files[-1].write_text(json.dumps(L.choose(group, trials)))
    t = L.table(files)
    assert list(t["method"]) == ["EnD", "EnD", "PD-EnD² moff0", "PD-EnD² moff0"]
    # 0.01 has the higher agreement here: the top of the grid, flagged
    assert list(t["chosen"]) == ["", "✓ (upper edge of the grid)"] * 2
