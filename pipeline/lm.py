"""The token-level models (``rule text_member`` / ``rule text_distill``): a small LSTM language
model, its ensemble members (cross-entropy) and its students (EnD / EnD2 / PD-EnD2, every target
token a K = V-way distribution, as in the paper's WMT setup).

The teacher runs online. Caching the ensemble for the train split would need, per token, a
V-wide pi_bar and l_bar (EnD2 needs l_bar for every class, the tail included): at V = 5,000 and
650k train tokens that is 13 GB even in float16, and a top-k summary would change exactly the tail
terms whose gradients the experiment is about. Instead each student batch runs the M frozen
members (eval mode, no grad) on the same input and builds the float64 statistics from their
log-softmax (:func:`pipeline.dirichlet.teacher_stats`): the losses see the exact ensemble, and the
cost is M forward passes per step (``benchmarks/bench_text.py`` measures it). Evaluation
splits are cached per token (``pipeline.text_eval``).

Run by hand::

    python -m pipeline.lm member --data results/text/data --vocab 1000 --seed 0 \
        --config-json '{...}' --out m.safetensors --ckpt m.pt
    python -m pipeline.lm student --data results/text/data --vocab 1000 --seed 0 \
        --members m0.safetensors m1.safetensors --config-json '{"method": "pd_end2", ...}' \
        --out s.safetensors --ckpt s.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline import dirichlet as Dir
from pipeline import text_data as TD
from pipeline.distill import METHODS, method_loss, temperature_at
from pipeline.io import load_state, read_json, sha256_file
from pipeline.resources import ResourceRecord
from pipeline.train import (
    Interrupted,
    fit_and_save,
    select_device,
    set_threads,
)

POOL_BATCHES = 50
"""Length bucketing: each pool of this many batches is sorted by length before it is cut."""


class TokenLSTM(nn.Module):
    """Next-token model: embedding (``V + 1`` ids, BOS = V) -> LSTM -> linear head over ``V``.

    ``forward(x [B, L] int64, -1 = padding)`` returns logits ``[T, V]`` of the ``T`` non-padding
    positions only, in row-major order of ``x >= 0``: the head, the costly part at large V,
    never runs on padding.
    """

    def __init__(self, vocab_size: int, dim: int = 64, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.vocab_size = int(vocab_size)
        self.embed = nn.Embedding(self.vocab_size + 1, dim)
        self.rnn = nn.LSTM(
            dim, dim, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, self.vocab_size)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, dim]`` hidden states of the non-padding positions of ``x [B, L]``."""
        h, _ = self.rnn(self.drop(self.embed(x.clamp_min(0))))
        return self.drop(h[x >= 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(x))


def build_lm(cfg: dict, vocab_size: int) -> TokenLSTM:
    """A :class:`TokenLSTM` from a ``model`` config slice (``name: lstm``, ``dim``, ``layers``,
    ``dropout``)."""
    if cfg.get("name", "lstm") != "lstm":
        raise ValueError(f"text model must be 'lstm', got {cfg.get('name')!r}")
    return TokenLSTM(
        vocab_size,
        int(cfg.get("dim", 64)),
        int(cfg.get("layers", 2)),
        float(cfg.get("dropout", 0.1)),
    )


def load_lm(path: str | Path) -> tuple[TokenLSTM, dict]:
    """A trained model and its metadata (``meta.json`` beside the weights)."""
    meta = read_json(Path(path).with_suffix(".json"))
    model = build_lm(meta["config"]["model"], int(meta["vocab_size"]))
    model.load_state_dict(load_state(path))
    return model.eval(), meta


def trim(x: torch.Tensor) -> torch.Tensor:
    """Drop the all-padding columns of a batch ``[b, L]`` (its longest sequence sets L)."""
    width = int((x >= 0).sum(1).max())
    return x[:, :width]


def length_batches(lengths: torch.Tensor) -> Callable[[int, int, torch.Generator], list]:
    """A ``fit`` batcher: shuffle, sort pools of :data:`POOL_BATCHES` batches by length, cut
    them into batches and shuffle the batches (little padding, still random; deterministic in
    the generator). Gives exactly ``ceil(n / batch_size)`` batches."""

    def batcher(n: int, bs: int, g: torch.Generator) -> list[torch.Tensor]:
        perm = torch.randperm(n, generator=g)
        pool = bs * POOL_BATCHES
        batches = []
        for i in range(0, n, pool):
            chunk = perm[i : i + pool]
            chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
            batches.extend(chunk[j : j + bs] for j in range(0, len(chunk), bs))
        order = torch.randperm(len(batches), generator=g)
        return [batches[int(i)] for i in order]

    return batcher


def targets_of(targets: torch.Tensor, idx: torch.Tensor, width: int) -> torch.Tensor:
    """The ``[T]`` targets of batch ``idx`` in the order :class:`TokenLSTM` emits logits."""
    t = targets[idx, :width]
    return t[t >= 0]


@torch.no_grad()
def member_logits(members: list[TokenLSTM], x: torch.Tensor) -> list[torch.Tensor]:
    """The frozen members' float32 logits ``[T, V]`` (one per member) on the batch ``x [b, L]``."""
    return [m(x).float() for m in members]


@torch.no_grad()
def token_eval(model: TokenLSTM, seqs: dict, device: torch.device, batch: int = 256) -> dict:
    """Token accuracy and NLL of ``model`` on padded sequences (a validation check)."""
    model.eval()
    nll, correct, count = 0.0, 0, 0
    n = seqs["inputs"].shape[0]
    for i in range(0, n, batch):
        x = trim(seqs["inputs"][i : i + batch]).to(device)
        y = seqs["targets"][i : i + batch, : x.shape[1]]
        y = y[y >= 0].to(device)
        lp = torch.log_softmax(model(x).double(), -1)
        nll += float(-lp.gather(1, y[:, None]).sum())
        correct += int((lp.argmax(1) == y).sum())
        count += len(y)
    return {"val_acc": correct / count, "val_nll": nll / count}


class _TokenCounter:
    """Counts the target tokens a run trains on per epoch (history column ``train_tokens``)."""

    def __init__(self) -> None:
        self.n = 0

    def take(self) -> int:
        n, self.n = self.n, 0
        return n


def _setup(data_dir, vocab: int, cfg: dict):
    manifest = TD.load_manifest(data_dir)
    train = TD.load_sequences(data_dir, "train", vocab)
    n = int(cfg.get("train_sentences") or 0)
    if n and n < len(train["lengths"]):  # one fixed subset, the same for every run
        keep = torch.randperm(len(train["lengths"]), generator=torch.Generator().manual_seed(0))
        keep = keep[:n].sort().values
        train = {k: v[keep] for k, v in train.items()}
    val = TD.load_sequences(data_dir, "val", vocab)
    size = cfg.get("val_size")
    if size:
        val = {k: v[: int(size)] for k, v in val.items()}
    return manifest, train, val


def train_member(
    data_dir, vocab: int, cfg: dict, seed: int, out, ckpt, log: Callable[[str], None] = print
) -> list[dict]:
    """One ensemble member: token-level cross-entropy (mean over the batch's tokens)."""
    manifest, train, val = _setup(data_dir, vocab, cfg)
    torch.manual_seed(seed)
    model = build_lm(cfg["model"], vocab)
    device = select_device(cfg.get("device", "auto"))
    targets = train["targets"].to(device)
    counter = _TokenCounter()
    smoothing = float(cfg.get("label_smoothing", 0.0))
    log(f"text member V={vocab} seed={seed} sequences={len(targets)} device={device}")

    def loss_fn(logits, idx, epoch):
        y = targets_of(targets, idx.to(device), trim(train["inputs"][idx]).shape[1])
        counter.n += len(y)
        return F.cross_entropy(logits, y, label_smoothing=smoothing)

    def eval_fn(model, epoch):
        return {"train_tokens": counter.take(), **token_eval(model, val, device)}

    meta = {"role": "member", "vocab_size": vocab, "data_sha256": _data_hash(manifest)}
    return fit_and_save(
        model,
        train["inputs"],
        loss_fn,
        cfg,
        seed=seed,
        ckpt=ckpt,
        out=out,
        fp_inputs={"data": meta["data_sha256"], "vocab": vocab},
        meta=meta,
        eval_fn=eval_fn,
        device=device,
        log=log,
        transform=trim,
        batcher=length_batches(train["lengths"]),
    )


def _data_hash(manifest: dict) -> str:
    return manifest["splits"]["train"]["sha256"]


def load_members(paths: list[str | Path], vocab: int, device: torch.device) -> list[TokenLSTM]:
    """The frozen ensemble: every member must have been trained at ``vocab`` classes."""
    members = []
    for p in paths:
        model, meta = load_lm(p)
        if int(meta["vocab_size"]) != vocab:
            raise ValueError(f"member {p} has V={meta['vocab_size']}, the student needs V={vocab}")
        members.append(model.to(device).requires_grad_(False))
    return members


def student_loss(
    method: str, options: dict, logits: torch.Tensor, members: list[torch.Tensor], epoch: int
) -> torch.Tensor:
    """Token-level loss of ``method`` for student logits ``[T, V]`` and the members' logits
    (``M`` tensors ``[T, V]``), averaged over tokens. The statistics come from
    :func:`pipeline.dirichlet.online_teacher_stats`."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    temp = temperature_at(epoch, options.get("temperature")) if method == "end2" else 1.0
    smooth = float(options.get("smoothing", 0.0)) if method == "end2" else 0.0
    s = Dir.online_teacher_stats(
        members, temperature=temp, smoothing=smooth, need_floored=method == "end2"
    )
    return method_loss(method, options, logits, s)


def train_student(
    data_dir,
    vocab: int,
    member_paths: list[str | Path],
    cfg: dict,
    seed: int,
    out,
    ckpt,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """One student with ``cfg["method"]`` / ``cfg["options"]``, the members run online (so
    EnD2's temperature schedule and smoothing re-temper the exact member outputs)."""
    manifest, train, val = _setup(data_dir, vocab, cfg)
    method, options = cfg["method"], cfg.get("options", {})
    device = select_device(cfg.get("device", "auto"))
    members = load_members(member_paths, vocab, device)
    torch.manual_seed(seed)
    model = build_lm(cfg["model"], vocab)
    inputs = train["inputs"]
    counter = _TokenCounter()
    log(
        f"text student V={vocab} method={method} options={options} seed={seed} "
        f"members={len(members)} device={device} (teacher online)"
    )

    def loss_fn(logits, idx, epoch):
        x = trim(inputs[idx]).to(device)
        counter.n += logits.shape[0]
        return student_loss(method, options, logits, member_logits(members, x), epoch)

    def eval_fn(model, epoch):
        row = {"train_tokens": counter.take(), **token_eval(model, val, device)}
        agree, count = 0, 0
        with torch.no_grad():
            for i in range(0, val["inputs"].shape[0], 256):
                x = trim(val["inputs"][i : i + 256]).to(device)
                ens = sum(torch.softmax(z, -1) for z in member_logits(members, x)).argmax(-1)
                agree += int((model(x).argmax(-1) == ens).sum())
                count += len(ens)
        row["val_agreement"] = agree / count
        return row

    member_hashes = [sha256_file(p) for p in member_paths]
    meta = {
        "role": "student",
        "method": method,
        "options": options,
        "vocab_size": vocab,
        "teacher_member_sha256": member_hashes,
    }
    return fit_and_save(
        model,
        inputs,
        loss_fn,
        cfg,
        seed=seed,
        ckpt=ckpt,
        out=out,
        fp_inputs={"data": _data_hash(manifest), "vocab": vocab, "teacher": member_hashes},
        meta=meta,
        eval_fn=eval_fn,
        device=device,
        log=log,
        transform=trim,
        batcher=length_batches(train["lengths"]),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description="Train a text member or student")
    ap.add_argument("role", choices=["member", "student"])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--vocab", required=True, type=int)
    ap.add_argument("--seed", required=True, type=int)
    ap.add_argument("--members", nargs="*", default=[], type=Path)
    ap.add_argument("--config-json", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--ckpt", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--resources-json", type=Path, default=None)
    a = ap.parse_args()
    set_threads(a.threads)
    cfg = {**json.loads(a.config_json), "device": a.device}
    log = lambda s: print(s, flush=True)  # noqa: E731
    try:
        with ResourceRecord(a.resources_json, f"text_{a.role}", select_device(a.device)) as rec:
            if a.role == "member":
                h = train_member(a.data, a.vocab, cfg, a.seed, a.out, a.ckpt, log)
            else:
                if not a.members:
                    raise SystemExit("a student needs --members")
                h = train_student(a.data, a.vocab, a.members, cfg, a.seed, a.out, a.ckpt, log)
            rec.samples = int(sum(r["train_tokens"] for r in h))
    except Interrupted as err:
        print(err, flush=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
