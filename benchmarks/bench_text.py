"""Token-task student training speed: tokens/s per method against cross-entropy, where the time
goes, and what a train-split teacher cache would cost instead of the online teacher.

Run: ``python benchmarks/bench_text.py --data results/text/data --vocab 5000`` (a prepared
corpus from ``rule prepare_data`` of the text config; ``--threads 1`` matches one Snakemake job
per core).
Measures, on the same length-bucketed batches and after warm-up steps (so one-off compilation
is excluded), one optimiser step of an untrained student with the config's model:

* ``cross_entropy``  the members' training step (the baseline);
* ``end`` / ``end2`` / ``pd_end2``  a student step as training runs it: the members' logits
  rebuilt from the teacher cache's train features (``pipeline.tasks.text.teacher.TrainFeatures``:
  a gather and one matmul per member), the online statistics
  (``pipeline.maths.stats.online_teacher_stats``), the loss, backward, update; as in training, the
  loss value (float64) on one step in ``--value-every`` and the float32 gradient alone on the
  others (``pipeline.maths.values``);
* ``end online`` / ``pd_end2 online``  the same step with the member LSTMs run on every batch
  instead (the path the features cache replaced);
* ``end+stats64`` EnD with the float64 ``teacher_stats`` that the online statistics replace.

Shares: ``student_fwd_bwd`` (the student network forward and backward, optimiser step),
``teacher_lstm`` (the members' recurrent part, online rows) or ``teacher_gather`` (the cached
features of the batch), ``teacher_head`` (the members' d x V output layers), ``stats``, ``loss``
(the loss forward, which also forms its gradient).

Then prints the train-split cache sizes: the features cache the pipeline writes (float32
``[N, M, d]`` + heads) against the alternatives that store the ensemble itself (float32 member
log-probs ``[N, M, V]``, or float16 ``pi_bar`` + ``l_bar`` ``[N, V]`` as the image task does).
This measures and prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from pipeline import methods
from pipeline.defaults import TRAINING_DEFAULTS
from pipeline.maths import losses as Lm
from pipeline.maths import stats as Dir
from pipeline.tasks.text import corpus as TD
from pipeline.tasks.text import model as lm
from pipeline.tasks.text import teacher as TT


def step_times(method, members, cache, batches, data, vocab, dim, layers, every, warmup=3):
    torch.manual_seed(0)
    model = lm.TokenLSTM(vocab, dim, layers)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    online = method.endswith(" online")
    method = method.removesuffix(" online")
    parts = {"student_fwd_bwd": 0.0, "teacher_lstm": 0.0, "teacher_gather": 0.0}
    parts.update(teacher_head=0.0, stats=0.0, loss=0.0)
    tokens = 0
    for i, idx in enumerate(batches):
        if i == warmup:
            parts = dict.fromkeys(parts, 0.0)
            tokens = 0
        t0 = time.perf_counter()
        x = lm.trim(data["inputs"][idx])
        logits = model(x)
        t1 = time.perf_counter()
        if method == "cross_entropy":
            t1b = t2 = t3 = t1  # no teacher: the loss share is the cross-entropy itself
            y = lm.targets_of(data["targets"], idx, x.shape[1])
            loss = F.cross_entropy(logits, y)
        else:
            with torch.no_grad():  # the members' logits, split: their features, then heads
                if online:  # lm.member_logits: the LSTMs
                    hidden = [m.hidden(x) for m in members]
                else:  # TrainFeatures.logits: the cached rows
                    h = cache.feats[cache.tokens(idx)]
                    hidden = [h[:, j].contiguous() for j in range(h.shape[1])]
                t1b = time.perf_counter()
                z = [m.head(h).float() for m, h in zip(members, hidden, strict=True)]
            t2 = time.perf_counter()
            if method == "stats64":
                s = Dir.teacher_stats(torch.stack(z, 1).double())
                t3 = time.perf_counter()
                loss = Lm.end_loss(logits, s)
            else:
                s = Dir.online_teacher_stats(z, need_floored=methods.get(method).needs_floored)
                t3 = time.perf_counter()
                opts = {"model_offset": 0.0} if method == "end2" else {}
                with Lm.gradient_only(i % every != 0):  # as the engine: a value 1 step in N
                    loss = methods.loss(method, opts, logits, s)
        t4 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        opt.step()
        t5 = time.perf_counter()
        parts["student_fwd_bwd"] += (t1 - t0) + (t5 - t4)
        parts["teacher_lstm" if online else "teacher_gather"] += t1b - t1
        parts["teacher_head"] += t2 - t1b
        parts["stats"] += t3 - t2
        parts["loss"] += t4 - t3
        tokens += logits.shape[0]
    total = sum(parts.values())
    return tokens / total, {k: v / total for k, v in parts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="results/text/data")
    ap.add_argument("--vocab", type=int, nargs="+", default=[5000])
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--value-every",
        type=int,
        default=TRAINING_DEFAULTS["loss_value_every"],
        help="the loss value on 1 step in N, the float32 gradient alone on the others (1: always)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads} batch={args.batch_size} sequences, M={args.members}")
    for vocab in args.vocab:
        data = TD.load_sequences(args.data, "train", vocab)
        n = len(data["lengths"])
        g = torch.Generator().manual_seed(0)
        batches = lm.length_batches(data["lengths"])(n, args.batch_size, g)[: args.steps + 3]
        members = [
            lm.TokenLSTM(vocab, args.dim, args.layers).eval().requires_grad_(False)
            for _ in range(args.members)
        ]
        cache = TT.TrainFeatures.from_tensors(
            TT.train_features(args.data, vocab, members, 32), None, "cpu"
        )
        base = None
        print(f"\nV = {vocab}")
        print(f"{'method':15s} {'tokens/s':>9s} {'x CE':>6s}  share of the step")
        rows = ("cross_entropy", "end", "end2", "pd_end2", "end online", "pd_end2 online")
        for method in (*rows, "stats64"):
            tps, parts = step_times(
                method,
                members,
                cache,
                batches,
                data,
                vocab,
                args.dim,
                args.layers,
                args.value_every,
            )
            base = base or tps
            share = "  ".join(f"{k}={v:.2f}" for k, v in parts.items() if v > 0)
            label = "end+stats64" if method == "stats64" else method
            print(f"{label:15s} {tps:9.0f} {base / tps:6.2f}  {share}")
        tokens = int((data["targets"] >= 0).sum())
        gib = 2**30
        feats = (tokens * args.members * args.dim + args.members * vocab * (args.dim + 1)) * 4
        dense = tokens * args.members * vocab * 4
        stats = tokens * vocab * 2 * 2
        print(
            f"train-split cache, {tokens:,} tokens: features float32 [N, M, d] + heads "
            f"{feats / gib:.2f} GiB (written); instead, float32 [N, M, V] {dense / gib:.1f} GiB, "
            f"float16 pi_bar + l_bar [N, V] {stats / gib:.1f} GiB ({stats / feats:.0f}x)"
        )


if __name__ == "__main__":
    main()
