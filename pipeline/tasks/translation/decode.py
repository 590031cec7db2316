"""Decoding: beam search with length normalisation, and greedy search, for one model or an
ensemble of them (per step, the members' probabilities are averaged, as fairseq's ensemble does).

A hypothesis ends with EOS; its score is ``sum_t ln p(y_t | y_<t, x)`` over its tokens (EOS
included), ranked by ``score / length ** alpha`` (``alpha = 1``: the mean log-probability per
token). Every step, a sentence with ``f`` finished hypotheses keeps the best ``beam - f``
extensions of its live ones (EOS among them): those ending in EOS are finished, the others stay
live; the sentence is done when ``beam`` are finished, and at ``max_len`` tokens only EOS may
follow. With ``beam = 1`` this is greedy search, and with a beam wider than every prefix it is
exhaustive search (both tested).

The search runs where the models' parameters are (a GPU: the model steps and the per-step
scores stay there; the hypotheses' tokens are collected on the host).

A Dirichlet student decodes with its point prediction ``softmax(z)``, the mean of the
categorical its logits define: for ``alpha = exp(z) + m_off`` the Dirichlet's own mean
``alpha / alpha_0`` equals it only for ``m_off = 0`` (``docs/method.md``, "Student").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.tasks.translation.vocab import BOS, EOS, PAD

__all__ = ["Hypothesis", "beam_search", "greedy", "pad", "step_log_probs"]


@dataclass
class Hypothesis:
    """A finished hypothesis: its tokens (EOS last), the log-probability of each, the total."""

    tokens: list[int]
    token_log_probs: list[float]
    score: float

    def normalized(self, alpha: float) -> float:
        return self.score / len(self.tokens) ** alpha


def pad(rows: list[Tensor], value: int = PAD) -> Tensor:
    """Id sequences ``[L_i]`` as one ``[N, max L_i]`` int64 tensor, right-padded."""
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _device(models) -> torch.device:
    """Where the models' parameters live (the decoding state follows them)."""
    return next(models[0].parameters()).device


def _limits(models, src: list[Tensor], max_len: int | None) -> list[int]:
    """Each sentence's most tokens: ``max_len`` or ``1.5 S_i + 10``, at most the models' own
    position limit."""
    cap = min(getattr(m, "max_len", 1 << 30) for m in models)
    return [min(max_len or int(1.5 * len(s) + 10), cap) for s in src]


def step_log_probs(models, tokens: Tensor, states: list) -> tuple[Tensor, list]:
    """``ln mean_m softmax(z_m)`` ``[N, V]`` of the next token for every model's state (one
    model: its log-softmax; padding and BOS at ``-inf``), and the advanced states."""
    outs = [m.step(tokens, s) for m, s in zip(models, states, strict=True)]
    logps = [torch.log_softmax(z.double(), -1) for z, _ in outs]
    mean = logps[0] if len(logps) == 1 else torch.logsumexp(torch.stack(logps), 0)
    if len(logps) > 1:
        mean = mean - math.log(len(logps))
    mean[:, [PAD, BOS]] = -math.inf  # never emitted (as fairseq: not renormalised)
    return mean, [s for _, s in outs]


@torch.no_grad()
def beam_search(
    models, src: list[Tensor], beam: int = 5, alpha: float = 1.0, max_len: int | None = None
) -> list[Hypothesis]:
    """The best hypothesis of each source ``[S_i]`` under the ensemble ``models`` (eval mode).
    ``max_len`` (tokens, EOS included): ``1.5 S_i + 10`` by default, never more than the
    models' ``max_len`` positions."""
    for m in models:
        m.eval()
    n = len(src)
    limits = _limits(models, src, max_len)
    dev = _device(models)
    states = [m.start(pad(src).to(dev)) for m in models]
    rows = torch.arange(n, device=dev)  # the sentence of each live row
    live_tokens = [[] for _ in range(n)]  # per live row: tokens so far
    live_lps = [[] for _ in range(n)]
    scores = torch.zeros(n, dtype=torch.float64, device=dev)
    last = torch.full((n,), BOS, dtype=torch.int64, device=dev)
    finished: list[list[Hypothesis]] = [[] for _ in range(n)]
    for t in range(max(limits)):
        logp, states = step_log_probs(models, last, states)  # [R, V]
        keep_rows, keep_tok, keep_score, keep_from = [], [], [], []
        for sent in range(n):
            idx = (rows == sent).nonzero().flatten()
            slots = beam - len(finished[sent])
            if len(idx) == 0 or slots <= 0:
                continue
            total = scores[idx, None] + logp[idx]  # [r, V]
            if t + 1 >= limits[sent]:  # at max_len only EOS may follow
                eos = total[:, EOS].clone()
                total.fill_(-math.inf)
                total[:, EOS] = eos
            flat = total.flatten()
            k = min(slots, int(torch.isfinite(flat).sum()))
            v = total.shape[1]
            for b in torch.topk(flat, k).indices.tolist():
                r, tok = int(idx[b // v]), b % v
                if tok == EOS:
                    lps = live_lps[r] + [float(logp[r, EOS])]
                    finished[sent].append(Hypothesis(live_tokens[r] + [EOS], lps, float(flat[b])))
                else:
                    keep_rows.append(sent)
                    keep_from.append(r)
                    keep_tok.append(tok)
                    keep_score.append(float(flat[b]))
        if not keep_rows:
            break
        src_rows = torch.tensor(keep_from, device=dev)
        states = [s.select(src_rows) for s in states]
        live_tokens = [live_tokens[r] + [tok] for r, tok in zip(keep_from, keep_tok, strict=True)]
        live_lps = [
            live_lps[r] + [float(logp[r, tok])] for r, tok in zip(keep_from, keep_tok, strict=True)
        ]
        rows = torch.tensor(keep_rows, device=dev)
        scores = torch.tensor(keep_score, dtype=torch.float64, device=dev)
        last = torch.tensor(keep_tok, dtype=torch.int64, device=dev)
    return [max(f, key=lambda h: h.normalized(alpha)) for f in finished]


@torch.no_grad()
def greedy(models, src: list[Tensor], max_len: int | None = None) -> list[Hypothesis]:
    """The most probable next token at every step until EOS (or ``max_len``)."""
    for m in models:
        m.eval()
    n = len(src)
    dev = _device(models)
    limits = torch.tensor(_limits(models, src, max_len), device=dev)
    states = [m.start(pad(src).to(dev)) for m in models]
    last = torch.full((n,), BOS, dtype=torch.int64, device=dev)
    tokens = [[] for _ in range(n)]
    lps = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    for t in range(int(limits.max())):
        logp, states = step_log_probs(models, last, states)
        nxt = logp.argmax(-1)
        nxt[t + 1 >= limits] = EOS  # at max_len only EOS may follow
        for i in (~done).nonzero().flatten().tolist():
            tokens[i].append(int(nxt[i]))
            lps[i].append(float(logp[i, nxt[i]]))
        done |= nxt == EOS
        if bool(done.all()):
            break
        last = nxt
    return [Hypothesis(t, lp, sum(lp)) for t, lp in zip(tokens, lps, strict=True)]
