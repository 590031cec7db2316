"""What the engine and the evaluation read of the translation task, pinned: token-based batches,
the packed input's rows and targets, graded-loss rejection ratios, sequence scores, and the
closed-form Dirichlet sequence measures against Monte Carlo."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.maths import metrics as Mx
from pipeline.maths.tokens import dirichlet_tokens
from pipeline.tasks.translation.batches import Pairs, keep_rows, token_batches
from pipeline.tasks.translation.evaluation import sentence_scores
from pipeline.tasks.translation.model import Seq2Seq, decoder_inputs, pack, unpack
from pipeline.tasks.translation.vocab import BOS, EOS


def random_pairs(n=40, seed=0) -> Pairs:
    g = torch.Generator().manual_seed(seed)
    src = [
        torch.randint(4, 30, (int(k),), generator=g)
        for k in torch.randint(1, 12, (n,), generator=g)
    ]
    tgt = [torch.cat([torch.randint(4, 20, (int(k),), generator=g), torch.tensor([EOS])])
           for k in torch.randint(0, 15, (n,), generator=g)]  # fmt: skip
    return Pairs(src, tgt)


@pytest.mark.parametrize("n,bs", [(40, 8), (40, 7), (41, 40), (5, 1), (3, 2)])
def test_token_batches_cover_every_pair_once_in_the_engine_s_step_count(n, bs):
    pairs = random_pairs(n)
    batcher = token_batches(pairs.lengths())
    batches = batcher(n, bs, torch.Generator().manual_seed(1))
    assert len(batches) == math.ceil(n / bs) and all(len(b) for b in batches)
    assert sorted(torch.cat(batches).tolist()) == list(range(n))
    again = batcher(n, bs, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))


def test_token_batches_hold_about_equal_tokens_and_more_short_pairs():
    pairs = random_pairs(400, seed=2)
    cost = pairs.lengths()
    batches = token_batches(cost)(400, 20, torch.Generator().manual_seed(0))
    sums = torch.stack([cost[b].sum() for b in batches]).double()
    assert float(sums.max() - sums.min()) <= 2 * float(cost.max())  # equal up to a pair
    sizes = {float(cost[b].double().mean()): len(b) for b in batches}
    short, long = sizes[min(sizes)], sizes[max(sizes)]
    assert short > long  # a batch of short pairs holds more of them


def test_keep_rows_is_a_fixed_subset():
    assert keep_rows(10, None) is None and keep_rows(10, 10) is None
    rows = keep_rows(100, 30)
    assert (
        len(rows) == 30
        and torch.equal(rows, keep_rows(100, 30))
        and torch.equal(rows, rows.sort().values)
    )


def test_packed_rows_are_the_non_padding_target_positions_in_order():
    torch.manual_seed(0)
    model = Seq2Seq(30, 20, dim=16, heads=2, enc_layers=1, dec_layers=1, ffn=32, dropout=0.0).eval()
    pairs = random_pairs(5, seed=3)
    x = pairs.packed(range(5))
    src, tgt_in = unpack(x)
    assert x.shape[:2] == (5, 2) and (tgt_in[:, 0] == BOS).all()
    rows = model(x)  # [R, V]
    assert rows.shape == (sum(len(t) for t in pairs.tgt), 20)
    full = model(src, tgt_in)  # [B, T, V]
    at = torch.cat([full[i, : len(t)] for i, t in enumerate(pairs.tgt)])
    torch.testing.assert_close(rows, at)
    # the targets follow the same order, and each sentence alone gives its own rows
    assert torch.equal(pairs.targets(range(5)), torch.cat(pairs.tgt))
    start = 0
    for i, t in enumerate(pairs.tgt):
        alone = model(pack([pairs.src[i]], [t]))
        torch.testing.assert_close(alone, rows[start : start + len(t)], rtol=1e-5, atol=1e-5)
        start += len(t)
    assert [d[0].item() for d in decoder_inputs(pairs.tgt)] == [BOS] * 5


def test_packed_batch_loss_and_gradient_equal_the_sentences_alone():
    torch.manual_seed(1)
    model = Seq2Seq(30, 20, dim=16, heads=2, enc_layers=1, dec_layers=1, ffn=32, dropout=0.0)
    pairs = random_pairs(4, seed=4)

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    batch = F.cross_entropy(model(pairs.packed(range(4))), pairs.targets(range(4)), reduction="sum")
    g_batch = grads(batch)
    alone = sum(
        F.cross_entropy(model(pairs.packed([i])), pairs.targets([i]), reduction="sum")
        for i in range(4)
    )
    g_alone = grads(alone)
    torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_batch, g_alone, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_pack_refuses_a_wrong_shape():
    with pytest.raises(ValueError, match=r"\[B, 2, W\]"):
        unpack(torch.zeros(3, 4, dtype=torch.int64))


def test_rejection_ratio_of_a_graded_loss():
    rng = np.random.default_rng(0)
    loss = rng.random(200)
    assert Mx.rejection_ratio(loss, loss) == pytest.approx(1.0)
    assert Mx.rejection_ratio(-loss, loss) < -0.9
    assert abs(Mx.rejection_ratio(np.zeros(200), loss)) < 1e-12  # ties: the random curve
    errors = (rng.random(300) < 0.3).astype(float)
    unc = errors + rng.normal(0, 0.7, 300)
    assert Mx.rejection_ratio(unc, errors) == pytest.approx(Mx.prr(unc, errors), abs=1e-12)
    assert math.isnan(Mx.rejection_ratio(unc[:10], np.full(10, 0.4)))


def test_sentence_scores_average_each_sentence_s_tokens():
    offsets = torch.tensor([0, 2, 5, 6])
    tok = {
        k: torch.arange(6, dtype=torch.float32)
        for k in ("total", "data", "knowledge", "epkl", "rmi", "neg_confidence")
    }
    tok["logp_y"] = -torch.arange(6, dtype=torch.float32)
    s = sentence_scores(tok, offsets)
    assert s["total"].tolist() == [0.5, 3.0, 5.0] and s["seq_nll"].tolist() == [0.5, 3.0, 5.0]


def test_closed_form_sequence_measures_of_a_dirichlet_student_match_monte_carlo():
    """Per token, TU = H[E pi], DU = E H[pi], MI = TU - DU of alpha = exp(z) + m_off, averaged
    over a 3-token hypothesis: the closed forms against 200k Dirichlet samples per token."""
    torch.manual_seed(0)
    z = torch.randn(3, 5, dtype=torch.float64) * 1.5
    y = torch.tensor([0, 2, 4])
    out = dirichlet_tokens(z, 1.0, y)
    alpha = torch.exp(z) + 1.0
    pi = torch.distributions.Dirichlet(alpha).sample((200_000,))  # [S, 3, 5]
    tu = -(pi.mean(0) * pi.mean(0).log()).sum(-1)
    du = -(pi * pi.clamp_min(1e-300).log()).sum(-1).mean(0)
    offsets = torch.tensor([0, 3])
    closed = sentence_scores({**out, "logp_y": out["logp_y"]}, offsets)
    assert closed["total"][0] == pytest.approx(float(tu.mean()), abs=2e-3)
    assert closed["data"][0] == pytest.approx(float(du.mean()), abs=2e-3)
    assert closed["knowledge"][0] == pytest.approx(float((tu - du).mean()), abs=2e-3)
