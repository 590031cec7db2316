"""The translation model and its decoding, pinned exactly: incremental decoding equals the full
forward pass, a padded batch equals its sentences alone (loss and gradient), beam search with a
beam over every prefix equals exhaustive search, beam 1 equals greedy, and an ensemble of
identical members decodes like one member."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.tasks.translation import decode as Dc
from pipeline.tasks.translation.model import Seq2Seq
from pipeline.tasks.translation.vocab import BOS, EOS, PAD

V = 6  # tiny target vocabulary: PAD, UNK, BOS, EOS and two words


def tiny(seed=0, vocab=V, **kw) -> Seq2Seq:
    torch.manual_seed(seed)
    model = Seq2Seq(
        9, vocab, dim=16, heads=2, enc_layers=1, dec_layers=2, ffn=32, dropout=0.0, **kw
    )
    with torch.no_grad():  # a sharper model than at initialisation: decoding choices matter
        model.tgt_embed.weight.mul_(8.0)
    return model.eval()


def sources(seed=1, n=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.cat([torch.randint(4, 9, (int(k),), generator=g), torch.tensor([EOS])])
            for k in torch.randint(2, 6, (n,), generator=g)]  # fmt: skip


def test_incremental_decoding_equals_the_full_forward_pass():
    model = tiny()
    src = Dc.pad(sources())
    tgt_in = torch.tensor([[BOS, 4, 5, 4], [BOS, 5, 5, 4], [BOS, 4, 4, 5]])
    full = model(src, tgt_in)  # [B, T, V]
    state = model.start(src)
    for t in range(tgt_in.shape[1]):
        logits, state = model.step(tgt_in[:, t], state)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-5, atol=1e-5)


def test_a_padded_batch_gives_the_loss_and_gradient_of_its_sentences_alone():
    torch.manual_seed(3)
    model = Seq2Seq(9, V, dim=16, heads=2, enc_layers=2, dec_layers=2, ffn=32, dropout=0.0)
    srcs = sources(n=3)
    tgts = [torch.tensor([4, 5, EOS]), torch.tensor([5, EOS]), torch.tensor([4, 4, 5, 4, EOS])]

    def loss_of(src_rows, tgt_rows):
        tgt = Dc.pad(tgt_rows)
        tgt_in = torch.cat([torch.full((len(tgt_rows), 1), BOS), tgt[:, :-1]], 1)
        tgt_in[tgt_in == EOS] = PAD  # EOS is never an input
        logits = model(Dc.pad(src_rows), tgt_in)
        return F.cross_entropy(
            logits.flatten(0, 1), tgt.flatten(), ignore_index=PAD, reduction="sum"
        )

    model.zero_grad()
    batch = loss_of(srcs, tgts)
    batch.backward()
    batch_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    alone = sum(loss_of([s], [t]) for s, t in zip(srcs, tgts, strict=True))
    alone.backward()
    torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-6)
    for got, want in zip(batch_grads, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def _exhaustive(model, src, max_len, alpha):
    """The best normalised score over every sequence of words ending in EOS (<= max_len)."""
    words = [w for w in range(V) if w not in (PAD, BOS, EOS)]
    best, best_seq = -math.inf, None
    for length in range(max_len):
        for body in itertools.product([1, *words], repeat=length):  # UNK or a word
            seq = [*body, EOS]
            tgt_in = torch.tensor([[BOS, *seq[:-1]]])
            logp = torch.log_softmax(model(src[None], tgt_in).double(), -1)[0]
            score = float(logp[torch.arange(len(seq)), torch.tensor(seq)].sum().detach())
            if score / len(seq) ** alpha > best:
                best, best_seq = score / len(seq) ** alpha, seq
    return best_seq, best


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_search_over_every_prefix_is_exhaustive_search(alpha):
    model, max_len = tiny(seed=5), 4
    for src in sources(seed=7, n=2):
        want, score = _exhaustive(model, src, max_len, alpha)
        (got,) = Dc.beam_search([model], [src], beam=10_000, alpha=alpha, max_len=max_len)
        assert got.tokens == want
        assert got.normalized(alpha) == pytest.approx(score, rel=1e-5)  # float32 logits


def test_beam_one_is_greedy_and_beam_five_is_at_least_as_good():
    model = tiny(seed=2)
    src = sources(seed=4, n=4)
    greedy = Dc.greedy([model], src, max_len=8)
    beam1 = Dc.beam_search([model], src, beam=1, max_len=8)
    beam5 = Dc.beam_search([model], src, beam=5, alpha=0.0, max_len=8)
    for g, b1, b5 in zip(greedy, beam1, beam5, strict=True):
        assert g.tokens == b1.tokens
        assert g.score == pytest.approx(b1.score, rel=1e-12)
        assert b5.score >= g.score - 1e-12  # alpha 0: the sequence log-probability


def test_an_ensemble_of_identical_members_decodes_like_one_member():
    model = tiny(seed=8)
    src = sources(seed=9, n=3)
    one = Dc.beam_search([model], src, beam=3, max_len=8)
    three = Dc.beam_search([model, tiny(seed=8), tiny(seed=8)], src, beam=3, max_len=8)
    for a, b in zip(one, three, strict=True):
        assert a.tokens == b.tokens
        assert a.score == pytest.approx(b.score, abs=1e-9)
    other = Dc.beam_search([model, tiny(seed=11)], src, beam=3, max_len=8)
    assert any(a.score != pytest.approx(b.score, abs=1e-9) for a, b in zip(one, other, strict=True))
