"""The token task's model: a small LSTM language model whose every target token is a K = V-way
classification (as in the paper's WMT setup), and how its batches are cut and read.

``TokenLSTM.forward(x [B, L])`` returns logits ``[T, V]`` of the ``T`` non-padding positions only,
in row-major order of ``x >= 0``; :func:`targets_of` gives the targets in that order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from pipeline.io import load_weights

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
    """A trained model and its metadata (``meta.json`` beside the weights), verified by
    :func:`pipeline.io.load_weights`."""
    state, meta = load_weights(path)
    model = build_lm(meta["config"]["model"], int(meta["vocab_size"]))
    model.load_state_dict(state)
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


def load_members(paths: list[str | Path], vocab: int, device: torch.device) -> list[TokenLSTM]:
    """The frozen ensemble: every member must have been trained at ``vocab`` classes."""
    members = []
    for p in paths:
        model, meta = load_lm(p)
        if int(meta["vocab_size"]) != vocab:
            raise ValueError(f"member {p} has V={meta['vocab_size']}, the student needs V={vocab}")
        members.append(model.to(device).requires_grad_(False))
    return members
