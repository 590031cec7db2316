"""What every translation system (a member, the ensemble, a student) is measured on: its
decoded hypotheses, the per-token uncertainty along them, and its teacher-forced outputs on the
references. Shapes: ``N`` sentences, ``R`` tokens (hypothesis or reference tokens of all ``N``
sentences, in order), ``V`` the target vocabulary.

Sequence-level uncertainty follows Malinin & Gales (ICLR 2021): each token-level measure of
:data:`pipeline.maths.uncertainty.SCORES` is computed at every position of the decoded
hypothesis (the system run teacher-forced on its own output) and averaged over its tokens; for
the ensemble from the members' predictions at each position (:func:`pipeline.maths.tokens.
ensemble_tokens`), for a Dirichlet student in closed form (:func:`pipeline.maths.tokens.
dirichlet_tokens`), for a categorical model from its entropy alone.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline import methods
from pipeline.io import ragged
from pipeline.maths.tokens import categorical_tokens, dirichlet_tokens, ensemble_tokens
from pipeline.progress import JOB, Progress
from pipeline.tasks.translation.batches import Pairs
from pipeline.tasks.translation.decode import beam_search

__all__ = ["decode", "hypothesis_outputs", "reference_outputs"]


def decode(models: list, src: list[Tensor], cfg: dict, device, what: str = "") -> list[Tensor]:
    """Beam-search hypotheses ``[T_i]`` (EOS last) of the sources under ``models`` (several: the
    ensemble), ``cfg``: ``beam`` (5), ``alpha`` (length normalisation, 1.0), ``batch``
    (sentences decoded together, 32)."""
    beam, alpha = int(cfg.get("beam", 5)), float(cfg.get("alpha", 1.0))
    batch = int(cfg.get("batch", 32))
    order = sorted(range(len(src)), key=lambda i: len(src[i]))  # similar lengths together
    out: list[Tensor | None] = [None] * len(src)
    progress = Progress(len(src), f"{JOB.name} (beam {beam}{what})", unit="sent")
    for i in range(0, len(order), batch):
        rows = order[i : i + batch]
        hyps = beam_search(models, [src[r].to(device) for r in rows], beam=beam, alpha=alpha)
        for r, h in zip(rows, hyps, strict=True):
            out[r] = torch.tensor(h.tokens, dtype=torch.int64)
        progress.update(len(rows))
    return out


BATCH = 64
"""Sentence pairs per teacher-forced forward pass."""


@torch.no_grad()
def _outputs(models, pairs: Pairs, device, student: tuple[str, dict] | None) -> dict:
    """Per-token outputs (:mod:`pipeline.maths.tokens`) of the system on ``pairs``, teacher
    forced, one batch of pairs at a time (only that batch's ``[R_b, V]`` logits in memory)."""
    dirichlet = student is not None and methods.get(student[0]).dirichlet
    parts = []
    for model in models:
        model.eval()
    for i in range(0, len(pairs), BATCH):
        rows = range(i, min(i + BATCH, len(pairs)))
        x, y = pairs.packed(rows).to(device), pairs.targets(rows).to(device)
        z = [m(x).float() for m in models]
        if len(z) > 1:
            out = ensemble_tokens(z, y)
        elif dirichlet:
            out = dirichlet_tokens(z[0], methods.model_offset(*student), y)
        else:
            out = categorical_tokens(z[0], y)
        parts.append({k: v.cpu() for k, v in out.items()})
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def hypothesis_outputs(models, src, hyps, device, student=None) -> dict[str, Tensor]:
    """Per-token outputs along each hypothesis: ``logp_y`` (the system's log-probability of the
    hypothesis token), ``pred`` and the scores of :data:`~pipeline.maths.uncertainty.SCORES`,
    ``[R]`` over the hypothesis tokens (EOS included), with ``hyp.tokens``/``hyp.offsets`` (the
    hypotheses, :func:`pipeline.io.ragged`). ``student``: ``(method, options)`` of a student."""
    out = _outputs(models, Pairs(list(src), list(hyps)), device, student)
    out = {f"hyp.{k}": v for k, v in out.items()}
    out.update({f"hyp.{k}": v for k, v in ragged([h.tolist() for h in hyps]).items()})
    return out


def reference_outputs(models, pairs: Pairs, device, student=None) -> dict[str, Tensor]:
    """Teacher-forced outputs on the references (``ref.logp_y``, ``ref.pred``, ``ref.top_prob``
    and the scores) ``[R]`` over the reference tokens."""
    out = _outputs(models, pairs, device, student)
    out["top_prob"] = (-out["neg_confidence"]).float()
    return {f"ref.{k}": v for k, v in out.items()}
