"""The token task's sweep tables (through the aggregate stage) and the speed table."""

import numpy as np
import pandas as pd
import pytest

from pipeline.stages.aggregate import aggregate


def fake_tidy(tmp_path):
    rows = []
    for v in (100, 1000):
        for group, seeds in (("member", [0, 1]), ("ensemble", [-1]), ("end2", [0, 1]),
                             ("pd_end2", [0, 1])):  # fmt: skip
            for s in seeds:
                base = {"system": f"{group}-{s}", "group": group, "seed": s, "vocab": v}
                nll = 3.0 + (v / 1000) * (group == "end2") + 0.1 * s
                rows += [
                    {**base, "split": "test", "metric": "nll", "measure": "", "value": nll},
                    {**base, "split": "test", "metric": "agreement", "measure": "", "value": 0.9},
                    {**base, "split": "ood_permuted", "metric": "ood_auroc",
                     "measure": "knowledge", "value": 0.7},
                ]  # fmt: skip
    files = []
    for i, (_, g) in enumerate(pd.DataFrame(rows).groupby(["vocab", "system"])):
        files.append(tmp_path / f"m{i}.csv")
        g.to_csv(files[-1], index=False)
    return files


def fake_histories(tmp_path):
    """Histories of one member (cross-entropy) and one EnD2 student at V = 100."""
    hist = []
    for sub, tok, sec in (("members/seed0", 1000, 1.0), ("students/end2/seed0", 1000, 4.0)):
        p = tmp_path / "V100" / sub
        p.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"train_samples": [tok, tok], "train_seconds": [sec, sec]}).to_csv(
            p / "history.csv", index=False
        )
        hist.append(p / "history.csv")
    return hist


def test_sweep_tables_and_speed(tmp_path):
    tables = aggregate("text", fake_tidy(tmp_path), tmp_path / "tables", fake_histories(tmp_path))
    sweep = pd.read_csv(tmp_path / "tables" / "sweep.csv", keep_default_na=False)
    row = sweep[(sweep["vocab"] == 1000) & (sweep["group"] == "end2") & (sweep["metric"] == "nll")]
    assert row["mean"].item() == pytest.approx(4.05) and row["count"].item() == 2
    assert row["std"].item() == pytest.approx(np.std([4.0, 4.1], ddof=1))
    main = tables["main"].frame
    assert list(main["system"][:4]) == ["Single model", "Ensemble", "EnD²", "PD-EnD²"]
    assert list(main["V"]) == [100] * 4 + [1000] * 4
    assert main.loc[2, "NLL"] == "3.150 ± 0.071"  # EnD2 at V = 100: 3.1 + 0.1 s over s = 0, 1
    speed = tables["speed"].frame.set_index("method")
    assert speed.loc["cross_entropy", "tokens_per_s"] == 1000
    assert speed.loc["end2", "slowdown_vs_ce"] == pytest.approx(4.0)
    for name in ("main", "prr", "ood", "ood_main", "speed"):
        assert (tmp_path / "tables" / f"{name}.md").read_text().startswith("|")
    assert not (tmp_path / "tables" / "main.tex").exists()  # the text task writes csv + md


def test_convergence_table_applies_the_criterion_per_v(tmp_path):
    """EnD must agree with the ensemble at least as well as a single member does (means)."""
    agree = {  # (V, group) -> per-seed test agreement
        (100, "member"): [0.90, 0.88],
        (100, "end"): [0.91, 0.90],  # 0.905 >= 0.89: converged
        (100, "pd_end2_moff0"): [0.80, 0.82],
        (1000, "member"): [0.85, 0.87],
        (1000, "end"): [0.80, 0.84],  # 0.82 < 0.86: not converged
        (1000, "pd_end2_moff0"): [0.70, 0.72],
    }
    rows = []
    for (v, group), values in agree.items():
        for s, value in enumerate(values):
            rows.append({"system": f"{group}-{s}", "group": group, "seed": s, "vocab": v,
                         "split": "test", "metric": "agreement", "measure": "",
                         "value": value})  # fmt: skip
    path = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    conv = aggregate("text", [path], tmp_path / "tables")["convergence"].frame.set_index("V")
    assert list(conv.columns) == ["single member", "EnD", "PD-EnD² moff0", "converged"]
    assert conv.loc[100, "converged"] == "yes (EnD 0.905 vs member 0.890)"
    assert conv.loc[1000, "converged"] == "no (EnD 0.820 vs member 0.860)"
    assert conv.loc[1000, "PD-EnD² moff0"] == "0.710 ± 0.014"
    assert (tmp_path / "tables" / "convergence.md").read_text().startswith("|")


def test_convergence_table_marks_a_group_that_does_not_run_at_a_v(tmp_path):
    """group_vocab_sizes: a group run at one V only reads ``not run`` at the others."""
    agree = {(100, "member"): 0.9, (100, "end"): 0.92, (100, "pd_end2"): 0.5}
    agree |= {(1000, "member"): 0.85, (1000, "end"): 0.86}
    rows = [{"system": f"{g}-0", "group": g, "seed": 0, "vocab": v, "split": "test",
             "metric": "agreement", "measure": "", "value": a}
            for (v, g), a in agree.items()]  # fmt: skip
    path = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    conv = aggregate("text", [path], tmp_path / "tables")["convergence"].frame.set_index("V")
    assert conv.loc[100, "PD-EnD²"] == "0.500" and conv.loc[1000, "PD-EnD²"] == "not run"
    assert conv.loc[1000, "converged"] == "yes (EnD 0.860 vs member 0.850)"
    assert "not run" in (tmp_path / "tables" / "convergence.md").read_text()


def test_convergence_table_names_each_vs_student_budget(tmp_path):
    """The budget column comes from the students' histories (epochs, train tokens), not from the
    config; the members' histories do not count, and a V whose students differ lists each."""
    hist = fake_histories(tmp_path)  # a member and an EnD2 student: 2 epochs of 1,000 tokens
    p = tmp_path / "V1000" / "students" / "end2" / "seed0"
    p.mkdir(parents=True)
    pd.DataFrame({"train_samples": [1500] * 3, "train_seconds": [1.0] * 3}).to_csv(
        p / "history.csv", index=False
    )
    q = tmp_path / "V1000" / "students" / "pd_end2" / "seed0"
    q.mkdir(parents=True)
    pd.DataFrame({"train_samples": [900], "train_seconds": [1.0]}).to_csv(
        q / "history.csv", index=False
    )
    tables = aggregate(
        "text", fake_tidy(tmp_path), tmp_path / "out", [*hist, p / "history.csv", q / "history.csv"]
    )
    conv = tables["convergence"].frame.set_index("V")
    assert list(conv.columns)[:2] == ["student budget", "single member"]
    assert conv.loc[100, "student budget"] == "2 epochs, 2,000 tokens"
    assert conv.loc[1000, "student budget"] == "1 epoch, 900 tokens / 3 epochs, 4,500 tokens"
