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


@torch.no_grad()
def _logits(model, pairs: Pairs, device, batch: int = 64) -> list[Tensor]:
    """Teacher-forced logits ``[R_b, V]`` per batch of pairs (the model in eval mode)."""
    model.eval()
    out = []
    for i in range(0, len(pairs), batch):
        rows = range(i, min(i + batch, len(pairs)))
        out.append(model(pairs.packed(rows).to(device)).float())
    return out


def _outputs(models, pairs: Pairs, device, student: tuple[str, dict] | None) -> dict:
    """Per-token outputs (:mod:`pipeline.maths.tokens`) of the system on ``pairs``."""
    y = [
        pairs.targets(range(i, min(i + 64, len(pairs)))).to(device)
        for i in range(0, len(pairs), 64)
    ]
    per_model = [_logits(m, pairs, device) for m in models]
    parts = []
    for b, yb in enumerate(y):
        z = [logits[b] for logits in per_model]
        if len(z) > 1:
            parts.append(ensemble_tokens(z, yb))
        elif student is not None and methods.get(student[0]).dirichlet:
            parts.append(dirichlet_tokens(z[0], methods.model_offset(*student), yb))
        else:
            parts.append(categorical_tokens(z[0], yb))
    return {k: torch.cat([p[k].cpu() for p in parts]) for k in parts[0]}


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
