"""Translation-task speed (issue 30, to size its configs): target tokens/s of a member's
training step (cross-entropy, label smoothing 0.1) and of a student's step per method with the
online teacher (the members run, without gradient, on the student's teacher-forced batch; the
registry's loss per target token, padding masked), as ratios to cross-entropy, at each target
vocabulary size; and beam-search sentences/s (beam 5) of one model and of an ensemble.

Run: ``python benchmarks/bench_translation.py --data <prepared translation data> --vocab 1000
4000 --dim 128 --layers 2 --threads 2`` (``pipeline.tasks.translation.data.prepare`` writes
the data). Batches: ``--batches`` of the token-based batches training draws (``--sentences``
pairs per batch on average), the packed input the engine feeds. Untrained models (the step
costs do not depend on the weights). This measures and prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from pipeline import methods
from pipeline.maths.stats import online_teacher_stats
from pipeline.tasks.translation import data as TD
from pipeline.tasks.translation import decode as Dc
from pipeline.tasks.translation.batches import Pairs, token_batches
from pipeline.tasks.translation.model import Seq2Seq


def batches(d: dict, n: int, size: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` training batches as the pipeline draws them (:func:`token_batches` over the whole
    train split, ``size`` pairs per batch on average), picked at random: ``(packed x, targets)``."""
    pairs = Pairs(d["src"], d["tgt"])
    g = torch.Generator().manual_seed(seed)
    cut = token_batches(pairs.lengths())(len(pairs), size, g)
    pick = torch.randperm(len(cut), generator=g)[:n]
    return [(pairs.packed(cut[int(i)]), pairs.targets(cut[int(i)])) for i in pick]


def model(src_vocab: int, vocab: int, a, seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(
        src_vocab, vocab, dim=a.dim, heads=a.heads, enc_layers=a.layers, dec_layers=a.layers,
        ffn=4 * a.dim, dropout=0.1,
    )  # fmt: skip


def tokens_per_s(step, data, warmup: int = 2) -> float:
    tokens, seconds = 0, 0.0
    for i, batch in enumerate(data):
        t0 = time.perf_counter()
        step(*batch)
        if i >= warmup:
            seconds += time.perf_counter() - t0
            tokens += len(batch[1])
    return tokens / seconds


def measure(a, src_vocab: int, vocab: int) -> str:
    """One line: tokens/s of every step at V = ``vocab`` (ratios to cross-entropy), beam 5."""
    data = batches(TD.load_split(a.data, "train", vocab), a.batches, a.sentences)
    members = [model(src_vocab, vocab, a, seed).eval() for seed in range(a.members)]
    student = model(src_vocab, vocab, a, 100)
    opt = torch.optim.Adam(student.parameters(), 1e-4, betas=(0.9, 0.98))

    def ce_step(x, y):
        loss = F.cross_entropy(student(x), y, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def kd_step(x, y, method):
        with torch.no_grad():
            z = [m(x).float() for m in members]
        stats = online_teacher_stats(z, need_floored=methods.get(method).needs_floored)
        loss = methods.loss(method, {}, student(x).float(), stats)
        opt.zero_grad()
        loss.backward()
        opt.step()

    row = {"cross_entropy": tokens_per_s(ce_step, data)}
    for method in ("end", "end2", "pd_end2"):
        row[method] = tokens_per_s(lambda *b, m=method: kd_step(*b, m), data)
    test = TD.load_split(a.data, "test", vocab)["src"][: a.decode]
    t0 = time.perf_counter()
    Dc.beam_search(members[:1], test, beam=5)
    one = len(test) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    Dc.beam_search(members, test, beam=5)
    ens = len(test) / (time.perf_counter() - t0)
    ce = row["cross_entropy"]
    cells = " ".join(f"{k} {v:,.0f} tok/s ({ce / v:.2f}x)" for k, v in row.items())
    return f"V={vocab}: {cells}; beam 5: {one:.1f} sent/s one model, {ens:.1f} ensemble"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--vocab", type=int, nargs="+", required=True)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--sentences", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--decode", type=int, default=32, help="test sentences to beam-search")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    src_vocab = TD.tokenizer(a.data, "source").get_piece_size()
    print(f"d={a.dim} layers={a.layers}+{a.layers} heads={a.heads} threads={a.threads} "
          f"batch={a.sentences} sentences, {a.members} members")  # fmt: skip
    for vocab in a.vocab:
        print(measure(a, src_vocab, vocab), flush=True)


if __name__ == "__main__":
    main()
