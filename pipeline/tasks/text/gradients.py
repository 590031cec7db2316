"""The real-data gradient diagnostic of the token task (the stage ``token_gradients`` runs it
through :func:`pipeline.tasks.text.gradient_diagnostic`): :func:`pipeline.diagnostic.diagnose` on
the val sequences, the members as the teacher.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.diagnostic import check_student, diagnose, tables
from pipeline.tasks.text import corpus as TD
from pipeline.tasks.text.model import load_lm, load_members, member_logits, trim
from pipeline.tasks.text.teacher import check_manifest

BATCH = 16
"""Validation sequences per forward pass."""


def run(data_dir, vocab: int, teacher_dir, member_files, students: dict[str, Path], sentences):
    """``(profile, gate)`` tables for ``students`` (``group -> weights``) at V = ``vocab`` on the
    first ``sentences`` val sequences; a student of another group or V is an ArtifactError."""
    check_manifest(Path(teacher_dir), vocab, [Path(p) for p in member_files])
    members = load_members(member_files, vocab, torch.device("cpu"))
    val = TD.load_sequences(data_dir, "val", vocab)
    val = {k: v[:sentences] for k, v in val.items()}
    results = {}
    for group, path in students.items():
        model, meta = load_lm(path)
        check_student(path, meta, group, vocab)
        model.eval()

        def batches(model=model):
            for i in range(0, val["inputs"].shape[0], BATCH):
                x = trim(val["inputs"][i : i + BATCH])
                yield model(x), member_logits(members, x)

        results[group] = diagnose(group, meta, batches)
    return tables(results, vocab)
