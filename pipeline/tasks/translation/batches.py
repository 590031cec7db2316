"""The translation task's training data as the engine reads it: sentence pairs, token-based
batches, packed model inputs, the targets of a batch in the order of the model's logit rows, and
teacher-forced token validation. Shapes: ``B`` pairs, ``R`` target tokens of a batch, ``V`` the
target vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.tasks.translation.model import pack

__all__ = ["Pairs", "keep_rows", "token_batches", "token_eval"]


@dataclass
class Pairs:
    """Sentence pairs: ``src`` and ``tgt`` lists of id tensors (the target ends with EOS)."""

    src: list[Tensor]
    tgt: list[Tensor]

    def __len__(self) -> int:
        return len(self.src)

    def subset(self, rows) -> Pairs:
        return Pairs([self.src[int(i)] for i in rows], [self.tgt[int(i)] for i in rows])

    def packed(self, rows) -> Tensor:
        """The packed model input ``[B, 2, W]`` of pairs ``rows``."""
        return pack([self.src[int(i)] for i in rows], [self.tgt[int(i)] for i in rows])

    def targets(self, rows) -> Tensor:
        """``[R]`` the target ids of pairs ``rows``, in the model's logit-row order."""
        return torch.cat([self.tgt[int(i)] for i in rows]).long()

    def lengths(self) -> Tensor:
        """``[N]`` the padded cost of each pair: source plus target tokens."""
        return torch.tensor([len(s) + len(t) for s, t in zip(self.src, self.tgt, strict=True)])


def keep_rows(n: int, size: int | None, seed: int = 0) -> Tensor | None:
    """The fixed subset of ``size`` of ``n`` train pairs (a seeded draw, in corpus order), or
    ``None`` for all of them; the same for every job of a run."""
    if not size or size >= n:
        return None
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[: int(size)].sort().values


def token_batches(cost: Tensor) -> Callable[[int, int, torch.Generator], list[Tensor]]:
    """A ``fit`` batcher of token-based batches: every epoch, sort the pairs by ``cost [N]``
    (source + target tokens; equal costs in a random order), cut the order into exactly
    ``ceil(n / batch_size)`` batches of about equal total cost (so ``batch_size`` is the
    *mean* number of pairs per batch, and a batch of short pairs holds more of them: fairseq's
    ``max_tokens`` batching), and shuffle the batches. Deterministic in the generator."""

    def batcher(n: int, bs: int, g: torch.Generator) -> list[Tensor]:
        steps = math.ceil(n / bs)
        order = torch.argsort(cost[:n].double() + torch.rand(n, generator=g, dtype=torch.float64))
        cum = torch.cumsum(cost[order].double(), 0)
        want = torch.arange(1, steps, dtype=torch.float64) * float(cum[-1]) / steps
        edges = torch.searchsorted(cum, want, right=True).tolist()
        for i in range(len(edges)):  # every batch non-empty
            low = (edges[i - 1] if i else 0) + 1
            edges[i] = min(max(edges[i], low), n - (steps - 1 - i))
        parts = torch.tensor_split(order, edges)
        return [parts[int(i)] for i in torch.randperm(steps, generator=g)]

    return batcher


@torch.no_grad()
def token_eval(model, pairs: Pairs, device: torch.device, batch: int = 64) -> dict[str, float]:
    """Teacher-forced token accuracy and NLL (nats/token) of ``model`` on ``pairs``."""
    model.eval()
    nll, correct, count = 0.0, 0, 0
    for i in range(0, len(pairs), batch):
        rows = range(i, min(i + batch, len(pairs)))
        y = pairs.targets(rows).to(device)
        lp = torch.log_softmax(model(pairs.packed(rows).to(device)).double(), -1)
        nll += float(-lp.gather(1, y[:, None]).sum())
        correct += int((lp.argmax(1) == y).sum())
        count += len(y)
    return {"val_acc": correct / count, "val_nll": nll / count}
