"""The real-data gradient diagnostic of the translation task (the stage ``token_gradients`` runs
it through :func:`pipeline.tasks.translation.gradient_diagnostic`):
:func:`pipeline.diagnostic.diagnose` on the target tokens of the first valid pairs, teacher-forced
on their references, the members as the teacher.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.diagnostic import check_student, diagnose, tables
from pipeline.tasks.translation import data as TD
from pipeline.tasks.translation.batches import Pairs
from pipeline.tasks.translation.model import load_members, load_model
from pipeline.tasks.translation.teacher import check_manifest

BATCH = 16
"""Validation pairs per forward pass."""


def run(data_dir, vocab: int, teacher_dir, member_files, students: dict[str, Path], sentences):
    """``(profile, gate)`` tables for ``students`` (``group -> weights``) at V = ``vocab`` on the
    first ``sentences`` valid pairs; a student of another group or V is an ArtifactError."""
    check_manifest(teacher_dir, vocab, [Path(p) for p in member_files])
    members = load_members(member_files, vocab, torch.device("cpu"))
    d = TD.load_split(data_dir, "valid", vocab)
    val = Pairs(d["src"][:sentences], d["tgt"][:sentences])
    results = {}
    for group, path in students.items():
        model, meta = load_model(path)
        check_student(path, meta, group, vocab)

        def batches(model=model):
            for i in range(0, len(val), BATCH):
                x = val.packed(range(i, min(i + BATCH, len(val))))
                yield model(x), [m(x).float() for m in members]

        results[group] = diagnose(group, meta, batches)
    return tables(results, vocab)
