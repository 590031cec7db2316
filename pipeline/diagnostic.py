"""The real-data gradient diagnostic's measurement, shared by the sequence tasks
(``docs/method.md``; the stage ``token_gradients`` runs a task's ``gradient_diagnostic``, which
feeds this its own validation batches). On validation tokens, with the real members as the
teacher and each method group's trained student:

* the profile: mean ``|dL/dz_c|`` against the rank of ``pi_bar_c`` in that token (1 = the
  ensemble's top class), per group, with the mean ``pi_bar`` at that rank. The loss is the
  group's own (its method and options, at the member transform of progress 0), summed over
  tokens, so the magnitudes are those its optimiser sees (divided by the number of tokens);
* the gate: per group, the share of tokens whose ensemble top class has a student logit below 0
  (there the offset gate ``e^z psi'(1 + e^z)`` of an ``m_off = 1`` student is below 0.64), the
  share of ``sum_c |dL/dz_c|`` on head classes (:mod:`pipeline.maths.gradients`), and the mean
  student logit of the top class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from pipeline import methods
from pipeline.io import ArtifactError
from pipeline.maths.gradients import head_mask
from pipeline.maths.stats import online_teacher_stats

__all__ = ["check_student", "diagnose", "tables"]

Batches = Callable[[], Iterable[tuple[torch.Tensor, list[torch.Tensor]]]]
"""``batches()`` yields ``(student logits [T, V], the members' logits [T, V] each)`` per batch
of validation tokens (the student's logits need no gradient)."""


def check_student(path, meta: dict, group: str, vocab: int) -> None:
    """An :class:`ArtifactError` naming ``path`` where its student (metadata ``meta``) is not of
    method group ``group`` or not at V = ``vocab``."""
    held = meta.get("group", meta.get("method"))
    if held != group:
        raise ArtifactError(path, f"holds a {held} student, not {group}")
    if int(meta["vocab_size"]) != vocab:
        raise ArtifactError(path, f"is a V={meta['vocab_size']} student, not V={vocab}")


@torch.no_grad()
def diagnose(group: str, meta: dict, batches: Batches) -> tuple[np.ndarray, dict]:
    """``(mean |dL/dz| per rank [V], gate row)`` of one student (its metadata ``meta``) on the
    validation ``batches`` (the gate row carries the mean ``pi_bar`` per rank ``[V]`` under
    ``_prob``)."""
    method, options = meta["method"], meta.get("options", {})
    temperature, smoothing = methods.member_transform(method, options, 0)
    need_floored = methods.get(method).needs_floored
    vocab = int(meta["vocab_size"])
    profile = torch.zeros(vocab, dtype=torch.float64)
    prob = torch.zeros(vocab, dtype=torch.float64)
    tokens, below, head, total, top_logit = 0, 0, 0.0, 0.0, 0.0
    for logits, member_logits in batches():
        stats = online_teacher_stats(
            member_logits,
            temperature=temperature,
            smoothing=smoothing,
            need_floored=need_floored,
        )
        with torch.enable_grad():
            z = logits.detach().double().requires_grad_(True)
            methods.loss(method, options, z, stats, reduction="sum").backward()
        g = z.grad.abs()
        pbar = stats.mean_probs.double()
        order = torch.argsort(pbar, dim=-1, descending=True)
        profile += g.gather(1, order).sum(0)
        prob += pbar.gather(1, order).sum(0)
        top = order[:, 0]
        zt = z.detach().gather(1, top[:, None])[:, 0]
        below += int((zt < 0).sum())
        top_logit += float(zt.sum())
        head += float((g * head_mask(pbar)).sum())
        total += float(g.sum())
        tokens += z.shape[0]
    row = {
        "group": group,
        "method": method,
        "model_offset": methods.model_offset(method, options),
        "tokens": tokens,
        "top_class_below_zero": below / tokens,
        "head_share": head / total if total > 0 else float("nan"),
        "mean_top_logit": top_logit / tokens,
    }
    return (profile / tokens).numpy(), {**row, "_prob": (prob / tokens).numpy()}


def tables(
    results: dict[str, tuple[np.ndarray, dict]], vocab: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(profile, gate)`` tables of :func:`diagnose`'s results per group."""
    profiles, rows, prob = {}, [], np.full(vocab, np.nan)
    for group, (profile, row) in results.items():
        row = dict(row)
        prob = row.pop("_prob")
        profiles[group] = profile
        rows.append(row)
    table = pd.DataFrame({"rank": np.arange(1, vocab + 1), "mean_prob": prob, **profiles})
    return table, pd.DataFrame(rows)
