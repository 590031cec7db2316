"""Token-task evaluation: the per-token teacher cache, metrics against direct computations,
sequence-level scores, the sweep tables, the speed table and the class-count figure."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from test_lm import CFG, fake_corpus

from pipeline import lm
from pipeline import text_data as TD
from pipeline import text_eval as TE
from pipeline.evaluate import SCORES
from pipeline.io import atomic_save


def test_sequence_scores_are_means_over_each_sequence():
    seq = torch.tensor([0, 0, 0, 1, 2, 2])
    tok = {name: torch.arange(6.0) * (i + 1) for i, name in enumerate(SCORES)}
    tok["logp_y"] = -torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 7.0])
    s = TE.sequence_scores(tok, seq)
    np.testing.assert_allclose(s["total"], [1.0, 3.0, 4.5])
    np.testing.assert_allclose(s["seq_nll"], [2.0, 4.0, 6.0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("te")
    data = fake_corpus(d / "data")
    g = torch.Generator().manual_seed(9)
    for split, n in (("test", 20), ("ood_noise", 15)):
        lengths = torch.randint(2, 7, (n,), generator=g)
        tokens = torch.randint(2, 40, (int(lengths.sum()),), generator=g).int()
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)])
        atomic_save({"tokens": tokens, "offsets": offsets}, data / f"{split}.safetensors")
    man = json.loads((data / "manifest.json").read_text())
    man["splits"].update({"test": {"n": 20}, "ood_noise": {"n": 15}})
    (data / "manifest.json").write_text(json.dumps(man))
    members = []
    for seed in (3, 5):
        p = d / f"m{seed}.safetensors"
        lm.train_member(data, 20, {**CFG, "epochs": 1}, seed, p, d / f"m{seed}.pt", log=print)
        members.append(p)
    student = d / "s.safetensors"
    scfg = {**CFG, "epochs": 1, "method": "pd_end2", "options": {}}
    lm.train_student(data, 20, members, scfg, 0, student, d / "s.pt", log=print)
    TE.build_teacher(data, 20, members, d / "teacher")
    return d, data, members, student


def _metric(table, metric):
    return table[(table["split"] == "test") & (table["metric"] == metric)]["value"].item()


def _direct(models, data, split="test"):
    """Per-token mean-of-members probabilities of the targets, computed directly."""
    seqs = TD.load_sequences(data, split, 20)
    x = lm.trim(seqs["inputs"])
    y = lm.targets_of(seqs["targets"], torch.arange(len(x)), x.shape[1])
    with torch.no_grad():
        p = torch.stack([torch.softmax(m(x).double(), -1) for m in models]).mean(0)
    return p, y


def test_members_and_ensemble_metrics_match_direct_computation(trained):
    d, data, members, _ = trained
    models = [lm.load_lm(p)[0] for p in members]
    for system, mods in (("ensemble", models), ("member-5", models[1:])):
        t = TE.evaluate(system, data, d / "teacher", 20, d / "ev" / system)
        p, y = _direct(mods, data)
        assert _metric(t, "nll") == pytest.approx(
            float(-torch.log(p[torch.arange(len(y)), y]).mean())
        )
        assert _metric(t, "accuracy") == pytest.approx(float((p.argmax(1) == y).double().mean()))
        assert _metric(t, "perplexity") == pytest.approx(np.exp(_metric(t, "nll")))
    ens = TE.evaluate("ensemble", data, d / "teacher", 20, d / "ev" / "e")
    assert ens[ens["metric"] == "agreement"]["value"].item() == 1.0
    ood = ens[(ens["split"] == "ood_noise") & (ens["metric"] == "ood_auroc")]
    assert set(ood["measure"]) == set(TE.SEQ_SCORES) and ood["value"].between(0, 1).all()
    with pytest.raises(ValueError, match="member-4"):
        TE.evaluate("member-4", data, d / "teacher", 20, d / "ev" / "x")


def test_student_metrics_and_agreement_match_direct_computation(trained):
    d, data, members, student = trained
    t = TE.evaluate("pd_end2-seed0", data, d / "teacher", 20, d / "ev" / "s", student)
    model, _ = lm.load_lm(student)
    p, y = _direct([model], data)
    ens, _ = _direct([lm.load_lm(m)[0] for m in members], data)
    assert _metric(t, "nll") == pytest.approx(float(-torch.log(p[torch.arange(len(y)), y]).mean()))
    assert _metric(t, "agreement") == pytest.approx(
        float((p.argmax(1) == ens.argmax(1)).double().mean())
    )
    prr = t[t["metric"] == "prr"]
    assert set(prr["measure"]) == set(SCORES)
    with pytest.raises(ValueError, match="V=20"):
        TE.evaluate("pd_end2-seed0", data, d / "teacher", 30, d / "ev" / "s2", student)


def _fake_tidy(tmp_path):
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


def test_aggregate_sweep_speed_and_figure(tmp_path):
    hist = []
    for v, method, tok, sec in ((100, "members", 1000, 1.0), (100, "end2", 1000, 4.0)):
        p = tmp_path / f"V{v}" / method / ("seed0" if method == "members" else "end2/seed0")
        if method != "members":
            p = tmp_path / f"V{v}" / "students" / "end2" / "seed0"
        p.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"train_tokens": [tok, tok], "train_seconds": [sec, sec]}).to_csv(
            p / "history.csv", index=False
        )
        hist.append(p / "history.csv")
    tables = TE.aggregate(_fake_tidy(tmp_path), tmp_path / "tables", hist)
    sweep = pd.read_csv(tmp_path / "tables" / "sweep.csv", keep_default_na=False)
    row = sweep[(sweep["vocab"] == 1000) & (sweep["group"] == "end2") & (sweep["metric"] == "nll")]
    assert row["mean"].item() == pytest.approx(4.05) and row["count"].item() == 2
    assert row["std"].item() == pytest.approx(np.std([4.0, 4.1], ddof=1))
    assert list(tables["main"]["system"][:4]) == ["Single model", "Ensemble", "EnD²", "PD-EnD²"]
    speed = tables["speed"].set_index("method")
    assert speed.loc["cross_entropy", "tokens_per_s"] == 1000
    assert speed.loc["end2", "slowdown_vs_ce"] == pytest.approx(4.0)
    shares = tmp_path / "shares.csv"
    pd.DataFrame(
        {
            "num_classes": [10, 10, 1000],
            "method": ["EnD2", "PD-EnD2", "EnD2"],
            "example": [0, 0, 0],
            "head_share": [0.5, 0.9, 0.1],
        }  # fmt: skip
    ).to_csv(shares, index=False)
    paths = TE.headline_figure(
        tmp_path / "tables" / "sweep.csv", shares, tmp_path / "fig", "permuted", "knowledge"
    )
    assert all(p.stat().st_size > 1000 for p in paths)


@pytest.mark.parametrize("k", [5, 3000])
def test_fast_token_measures_match_the_float64_reference(k):
    from pipeline.evaluate import _measure

    g = torch.Generator().manual_seed(k)
    z = [torch.randn(150, k, generator=g) * 3 for _ in range(3)]  # several row blocks at 3000
    y = torch.randint(0, k, (150,), generator=g)
    lp = torch.stack([torch.log_softmax(m.double(), -1) for m in z], 1)
    cases = [
        (TE.ensemble_tokens(z, y), _measure(lp, "ensemble", 0.0, None)),
        (TE.categorical_tokens(z[0], y), _measure(lp[:, [0]], "member", 0.0, None)),
        (TE.categorical_tokens(z[1], y), _measure(z[1].double(), "end", 1.0, None)),
        (TE.dirichlet_tokens(z[2], 1.0, y), _measure(z[2].double(), "pd_end2", 1.0, None)),
        (TE.dirichlet_tokens(z[2], 0.0, y), _measure(z[2].double(), "end2", 0.0, None)),
    ]
    for fast, ref in cases:
        for name in SCORES:
            torch.testing.assert_close(
                fast[name].double(), ref["scores"][name], rtol=1e-5, atol=2e-5, msg=name
            )
        assert torch.equal(fast["pred"].long(), ref["probs"].argmax(1))
        want = torch.log(ref["probs"][torch.arange(150), y])
        torch.testing.assert_close(fast["logp_y"].double(), want, rtol=1e-5, atol=1e-5)
