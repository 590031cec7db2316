"""The real-data gradient diagnostic of the token task (``docs/method.md``; the stage
``token_gradients`` runs it through :func:`pipeline.tasks.text.gradient_diagnostic`). On
validation tokens, with the real members as the teacher and each method group's trained student:

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

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import methods
from pipeline.io import ArtifactError
from pipeline.maths.gradients import head_mask
from pipeline.maths.stats import online_teacher_stats
from pipeline.tasks.text import corpus as TD
from pipeline.tasks.text.model import load_lm, load_members, member_logits, trim
from pipeline.tasks.text.teacher import check_manifest

BATCH = 16
"""Validation sequences per forward pass."""


def diagnose(group: str, model, meta: dict, members, val: dict) -> tuple[np.ndarray, dict]:
    """``(mean |dL/dz| per rank [V], gate row)`` of one student on the val sequences ``val``
    (the gate row carries the mean ``pi_bar`` per rank ``[V]`` under ``_prob``)."""
    method, options = meta["method"], meta.get("options", {})
    temperature, smoothing = methods.member_transform(method, options, 0)
    need_floored = methods.get(method).needs_floored
    vocab = int(meta["vocab_size"])
    profile = torch.zeros(vocab, dtype=torch.float64)
    prob = torch.zeros(vocab, dtype=torch.float64)
    tokens, below, head, total, top_logit = 0, 0, 0.0, 0.0, 0.0
    model.eval()
    n = val["inputs"].shape[0]
    for i in range(0, n, BATCH):
        x = trim(val["inputs"][i : i + BATCH])
        stats = online_teacher_stats(
            member_logits(members, x),
            temperature=temperature,
            smoothing=smoothing,
            need_floored=need_floored,
        )
        with torch.enable_grad():
            z = model(x).detach().double().requires_grad_(True)
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


def run(data_dir, vocab: int, teacher_dir, member_files, students: dict[str, Path], sentences):
    """``(profile, gate)`` tables for ``students`` (``group -> weights``) at V = ``vocab`` on the
    first ``sentences`` val sequences; a student of another group or V is an ArtifactError."""
    check_manifest(Path(teacher_dir), vocab, [Path(p) for p in member_files])
    members = load_members(member_files, vocab, torch.device("cpu"))
    val = TD.load_sequences(data_dir, "val", vocab)
    val = {k: v[:sentences] for k, v in val.items()}
    profiles, rows = {}, []
    for group, path in students.items():
        model, meta = load_lm(path)
        if meta.get("group", meta.get("method")) != group:
            held = meta.get("group", meta.get("method"))
            raise ArtifactError(path, f"holds a {held} student, not {group}")
        if int(meta["vocab_size"]) != vocab:
            raise ArtifactError(path, f"is a V={meta['vocab_size']} student, not V={vocab}")
        profile, row = diagnose(group, model, meta, members, val)
        prob = row.pop("_prob")
        profiles[group] = profile
        rows.append(row)
    table = pd.DataFrame({"rank": np.arange(1, vocab + 1), "mean_prob": prob, **profiles})
    return table, pd.DataFrame(rows)
