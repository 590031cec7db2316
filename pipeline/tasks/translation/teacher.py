"""The translation task's teacher artifact: what the evaluation reads of the members and the
ensemble (so no member decodes twice). The students' teacher runs the members online
(:mod:`.online`) and reads none of it.

Teacher artifact (``rule cache_teacher``, ``<run>/teacher/``): per evaluated split (``test``,
``shift``, every ``ood_*``) and per system ``member-<seed>`` and ``ensemble``, the beam-search
hypotheses and the per-token outputs along them (:func:`.systems.hypothesis_outputs`); on the
splits with references also the teacher-forced outputs on them
(:func:`.systems.reference_outputs`) and, for the ensemble, how confident it is there
(``ensemble.ref.tail_log_mean``: the mean ``ln pi_bar_c`` over the classes below its top one).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline import __version__
from pipeline.device import select_device
from pipeline.imports import code_fingerprint
from pipeline.io import (
    ArtifactError,
    atomic_save,
    atomic_write_text,
    read_json,
    read_tensors,
    sha256_file,
)
from pipeline.maths import tokens as Tk
from pipeline.tasks.translation import data as TD
from pipeline.tasks.translation.batches import Pairs
from pipeline.tasks.translation.model import load_model
from pipeline.tasks.translation.systems import decode, hypothesis_outputs, reference_outputs

RULE = "cache_teacher"


def eval_splits(manifest: dict) -> list[str]:
    """The evaluated splits: ``test``, ``shift`` (where the corpus has one) and every
    ``ood_*``."""
    named = [s for s in ("test", "shift") if s in manifest["splits"]]
    return named + [s for s in manifest["splits"] if s.startswith("ood_")]


def split_pairs(d: dict, size: int | None = None) -> tuple[list, Pairs | None]:
    """The sources of a loaded split ``d`` (:func:`.data.load_split`; its first ``size``) and,
    where it has references, its pairs (else ``None``)."""
    n = len(d["src"]) if not size else min(int(size), len(d["src"]))
    pairs = Pairs(d["src"][:n], d["tgt"][:n]) if "tgt" in d else None
    return d["src"][:n], pairs


@torch.no_grad()
def tail_log_mean(members, pairs: Pairs, device, batch: int = 64) -> torch.Tensor:
    """``[R]`` float32 per reference token: :func:`pipeline.maths.tokens.tail_log_mean` of the
    members' outputs under teacher forcing (how small the ensemble's tail is)."""
    out = []
    for i in range(0, len(pairs), batch):
        x = pairs.packed(range(i, min(i + batch, len(pairs)))).to(device)
        out.append(Tk.tail_log_mean([m(x) for m in members]).float().cpu())
    return torch.cat(out)


def build_teacher(data_dir, member_files, out, cfg: dict, vocab: int, log=print) -> dict:
    """Decode every evaluated split with each member and with the ensemble and write the
    artifact (module docstring); ``cfg``: the ``teacher`` slice (``beam``, ``alpha``,
    ``batch``, ``eval_size``: sentences per split, null = all). Returns the manifest."""
    data_dir, out = Path(data_dir), Path(out)
    manifest = TD.load_manifest(data_dir)
    device = select_device(cfg.get("device", "auto"))
    loaded = [load_model(p) for p in member_files]
    members = [m.to(device).requires_grad_(False) for m, _ in loaded]
    if any(int(meta["vocab_size"]) != vocab for _, meta in loaded):
        raise ValueError(f"a member of {member_files} is not at V={vocab}")
    names = [f"member-{meta['seed']}" for _, meta in loaded]
    systems = [*zip(names, [[m] for m in members], strict=True), ("ensemble", members)]
    out.mkdir(parents=True, exist_ok=True)
    sha, counts = {}, {}
    for split in eval_splits(manifest):
        src, pairs = split_pairs(TD.load_split(data_dir, split, vocab), cfg.get("eval_size"))
        tensors = {}
        for name, models in systems:
            hyps = decode(models, src, cfg, device, f", {name}, {split}")
            parts = hypothesis_outputs(models, src, hyps, device)
            if pairs is not None:
                parts.update(reference_outputs(models, pairs, device))
            tensors.update({f"{name}.{k}": v for k, v in parts.items()})
        if pairs is not None:
            tensors["ensemble.ref.tail_log_mean"] = tail_log_mean(members, pairs, device)
        atomic_save(tensors, out / f"{split}.safetensors")
        sha[split] = sha256_file(out / f"{split}.safetensors")
        counts[split] = len(src)
        log(f"{split}: {len(src)} sentences decoded by {len(systems)} systems")
    cfg = {k: v for k, v in cfg.items() if k != "device"}  # how it decodes, not where
    info = {
        "task": "translation",
        "pipeline_version": __version__,
        "code_sha256": code_fingerprint("teacher", "translation"),
        "vocab": vocab,
        "config": cfg,
        "members": [str(p) for p in member_files],
        "member_sha256": [sha256_file(p) for p in member_files],
        "systems": [n for n, _ in systems],
        "splits": list(sha),
        "sentences": counts,
        "sha256": sha,
    }
    atomic_write_text(json.dumps(info, indent=2), out / "manifest.json")
    return info


def check_manifest(teacher_dir, vocab: int, member_files=None) -> dict:
    """The teacher manifest of ``teacher_dir``, checked against ``vocab`` and the members
    (``member_files=None``: not checked)."""
    info = read_json(Path(teacher_dir) / "manifest.json", RULE)
    if info.get("task") != "translation" or int(info.get("vocab", -1)) != vocab:
        raise ArtifactError(
            teacher_dir, f"is no translation teacher at V={vocab} (V={info.get('vocab')})", RULE
        )
    if member_files is not None and [sha256_file(p) for p in member_files] != info["member_sha256"]:
        raise ArtifactError(teacher_dir, "was built from other members than the job's", RULE)
    return info


def load_split(teacher_dir, split: str, info: dict) -> dict[str, torch.Tensor]:
    """One split of the artifact, checked against the sha256 in its manifest ``info``."""
    if split not in info["sha256"]:
        raise ArtifactError(Path(teacher_dir) / f"{split}.safetensors", "is not in it", RULE)
    return read_tensors(
        Path(teacher_dir) / f"{split}.safetensors", sha256=info["sha256"][split], rule=RULE
    )
