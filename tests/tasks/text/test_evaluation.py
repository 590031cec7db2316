"""Token-task evaluation: metrics against direct computations, sequence-level scores, the
per-token measures against the float64 reference."""

import json

import numpy as np
import pytest
import torch

from pipeline.io import atomic_save, sha256_file
from pipeline.maths import tokens as TK
from pipeline.maths.dirichlet import student_alphas
from pipeline.maths.uncertainty import (
    SCORES,
    categorical_uncertainty,
    dirichlet_uncertainty,
    ensemble_uncertainty,
    scores,
)
from pipeline.stages.distill import distill
from pipeline.stages.evaluate import evaluate
from pipeline.stages.train import train_member
from pipeline.tasks.text import corpus as TD
from pipeline.tasks.text import evaluation as TE
from pipeline.tasks.text import model as lm
from pipeline.tasks.text import teacher as TT
from tests.conftest import TEXT_CFG, fake_corpus


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
    man["splits"].update(
        {
            s: {"n": n, "sha256": sha256_file(data / f"{s}.safetensors")}
            for s, n in (("test", 20), ("ood_noise", 15))
        }
    )
    (data / "manifest.json").write_text(json.dumps(man))
    members = []
    for seed in (3, 5):
        p = d / f"m{seed}.safetensors"
        train_member("text", data, {**TEXT_CFG, "epochs": 1}, seed, p, d / f"m{seed}.pt", 20, print)
        members.append(p)
    TT.build_teacher(data, 20, members, d / "teacher")
    student = d / "s.safetensors"
    scfg = {**TEXT_CFG, "epochs": 1, "method": "pd_end2", "options": {}}
    distill("text", data, d / "teacher", members, scfg, 0, student, d / "s.pt", 20, print)
    return d, data, members, student


def _evaluate(d, data, system, out, model=None, vocab=20):
    return evaluate("text", system, data, d / "teacher", d / "ev" / out, model, {}, vocab)


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
        t = _evaluate(d, data, system, system)
        p, y = _direct(mods, data)
        assert _metric(t, "nll") == pytest.approx(
            float(-torch.log(p[torch.arange(len(y)), y]).mean())
        )
        assert _metric(t, "accuracy") == pytest.approx(float((p.argmax(1) == y).double().mean()))
        assert _metric(t, "perplexity") == pytest.approx(np.exp(_metric(t, "nll")))
    member = _evaluate(d, data, "member-3", "m3")
    p3, y = _direct(models[:1], data)
    ens_p, _ = _direct(models, data)
    assert _metric(member, "agreement") == pytest.approx(
        float((p3.argmax(1) == ens_p.argmax(1)).double().mean())
    )
    # the ensemble's tail: mean ln pi_bar over the V - 1 classes below its top one, per token
    ens_t = _evaluate(d, data, "ensemble", "tail")
    logp = torch.log(ens_p)
    tail = (logp.sum(1) - logp.max(1).values) / (logp.shape[1] - 1)
    assert _metric(ens_t, "tail_log_mean") == pytest.approx(float(tail.mean()), rel=1e-6)
    assert "tail_log_mean" not in set(member["metric"])  # the ensemble's only
    assert list(member.columns[:4]) == ["system", "group", "seed", "vocab"]
    assert set(member["vocab"]) == {20} and set(member["seed"]) == {3}
    ens = _evaluate(d, data, "ensemble", "e")
    ood = ens[(ens["split"] == "ood_noise") & (ens["metric"] == "ood_auroc")]
    assert set(ood["measure"]) == set(TE.SEQ_SCORES) and ood["value"].between(0, 1).all()
    with pytest.raises(ValueError, match="member-4"):
        _evaluate(d, data, "member-4", "x")


def test_student_metrics_and_agreement_match_direct_computation(trained):
    d, data, members, student = trained
    t = _evaluate(d, data, "pd_end2-seed0", "s", student)
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
        _evaluate(d, data, "pd_end2-seed0", "s2", student, vocab=30)


@pytest.mark.parametrize("k", [5, 3000])
def test_fast_token_measures_match_the_float64_reference(k):
    g = torch.Generator().manual_seed(k)
    z = [torch.randn(150, k, generator=g) * 3 for _ in range(3)]  # several row blocks at 3000
    y = torch.randint(0, k, (150,), generator=g)
    members = torch.stack([torch.softmax(m.double(), -1) for m in z], 1)  # [T, M, V] float64

    def dirichlet(logits, m_off):
        u = dirichlet_uncertainty(student_alphas(logits, m_off))
        point = torch.softmax(logits.double(), -1)
        return {"probs": point, "scores": scores({**u, "confidence": point.amax(-1)})}

    def categorical(probs, u):
        return {"probs": probs, "scores": scores(u)}

    p0 = members[:, 0]
    cases = [
        (TK.ensemble_tokens(z, y), categorical(members.mean(1), ensemble_uncertainty(members))),
        (TK.categorical_tokens(z[0], y), categorical(p0, categorical_uncertainty(p0))),
        (TK.dirichlet_tokens(z[2], 1.0, y), dirichlet(z[2], 1.0)),
        (TK.dirichlet_tokens(z[2], 0.0, y), dirichlet(z[2], 0.0)),
    ]
    for fast, ref in cases:
        for name in SCORES:
            torch.testing.assert_close(
                fast[name].double(), ref["scores"][name], rtol=1e-5, atol=2e-5, msg=name
            )
        assert torch.equal(fast["pred"].long(), ref["probs"].argmax(1))
        want = torch.log(ref["probs"][torch.arange(150), y])
        torch.testing.assert_close(fast["logp_y"].double(), want, rtol=1e-5, atol=1e-5)


def test_tail_log_mean_against_scipy_and_beyond_float32():
    """Mean ln pi_bar over the classes below the top one: equals scipy's float64 softmax mean
    across several row blocks; a tail ~300 nats down (0 in float32) stays finite and exact."""
    from scipy.special import softmax

    g = torch.Generator().manual_seed(0)
    k = 3000  # ROW_BLOCK // 3000 = 87 rows a block: 200 rows are three blocks
    z = [torch.randn(200, k, generator=g) * 4 for _ in range(3)]
    pbar = np.mean([softmax(m.double().numpy(), axis=1) for m in z], axis=0)
    logp = np.log(pbar)
    want = (logp.sum(1) - logp.max(1)) / (k - 1)
    got = TK.tail_log_mean(z)
    assert got.dtype == torch.float64 and got.shape == (200,)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    far = torch.tensor([[300.0, 0.0, 0.0, 0.0]])  # one member, tail at e^-300 of the head
    assert float(torch.softmax(far, -1)[0, 1]) == 0.0  # float32 has lost the tail
    assert TK.tail_log_mean([far]).item() == pytest.approx(-300.0 - np.log1p(3 * np.exp(-300)))
    with pytest.raises(ValueError, match="V=1"):
        TK.tail_log_mean([torch.zeros(3, 1)])
