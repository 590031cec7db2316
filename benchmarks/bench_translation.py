"""Translation-task speed (issue 30, to size its configs): target tokens/s of a member's
training step (cross-entropy, label smoothing 0.1) and of a student's step per method with the
online teacher (the members run, without gradient, on the student's teacher-forced batch; the
registry's loss per target token, padding masked), as ratios to cross-entropy, at each target
vocabulary size; and beam-search sentences/s (beam 5) of one model and of an ensemble.

Run: ``python benchmarks/bench_translation.py --data <prepared translation data> --vocab 1000
4000 --dim 128 --layers 2 --threads 2`` (``pipeline.tasks.translation.data.prepare`` writes
the data). Batches: the first ``--batches`` x ``--sentences`` train pairs, sorted by length so a
batch pads little, as training batches them. Untrained models (the step costs do not depend on
the weights). This measures and prints; it asserts nothing.
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
from pipeline.tasks.translation.model import Seq2Seq
from pipeline.tasks.translation.vocab import BOS, EOS, PAD


def batches(d: dict, n: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(src, tgt_in, tgt)`` padded batches of ``size`` pairs, length-sorted."""
    pairs = sorted(zip(d["src"], d["tgt"], strict=True), key=lambda p: len(p[1]))[: n * size]
    out = []
    for i in range(0, len(pairs), size):
        src = Dc.pad([s for s, _ in pairs[i : i + size]])
        tgt = Dc.pad([t for _, t in pairs[i : i + size]])
        tgt_in = torch.cat([torch.full((len(tgt), 1), BOS), tgt[:, :-1]], 1)
        tgt_in[tgt_in == EOS] = PAD
        out.append((src, tgt_in, tgt))
    return out


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
            tokens += int((batch[2] != PAD).sum())
    return tokens / seconds


def measure(a, src_vocab: int, vocab: int) -> str:
    """One line: tokens/s of every step at V = ``vocab`` (ratios to cross-entropy), beam 5."""
    data = batches(TD.load_split(a.data, "train", vocab), a.batches, a.sentences)
    members = [model(src_vocab, vocab, a, seed).eval() for seed in range(a.members)]
    student = model(src_vocab, vocab, a, 100)
    opt = torch.optim.Adam(student.parameters(), 1e-4, betas=(0.9, 0.98))

    def ce_step(src, tgt_in, tgt):
        logits = student(src, tgt_in)
        loss = F.cross_entropy(
            logits.flatten(0, 1), tgt.flatten(), ignore_index=PAD, label_smoothing=0.1
        )
        opt.zero_grad()
        loss.backward()
        opt.step()

    def kd_step(src, tgt_in, tgt, method):
        keep = tgt.flatten() != PAD
        with torch.no_grad():
            z = [m(src, tgt_in).flatten(0, 1)[keep] for m in members]
        stats = online_teacher_stats(z, need_floored=methods.get(method).needs_floored)
        logits = student(src, tgt_in).flatten(0, 1)[keep]
        loss = methods.loss(method, {}, logits.float(), stats)
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
