"""The translation task's teacher: the members run online on every student batch (as the
official code does), and the run's teacher artifact, which holds what the evaluation reads of the
members and the ensemble (so no member decodes twice).

Teacher artifact (``rule cache_teacher``, ``<run>/teacher/``): per evaluated split (``test``,
``shift``, every ``ood_*``) and per system ``member-<seed>`` and ``ensemble``, the beam-search
hypotheses and the per-token outputs along them (:func:`.systems.hypothesis_outputs`); on the
splits with references also the teacher-forced outputs on them
(:func:`.systems.reference_outputs`) and, for the ensemble, how confident it is there
(``ensemble.ref.tail_log_mean``: the mean ``ln pi_bar_c`` over the classes below its top one).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from pipeline import __version__, methods
from pipeline.imports import code_fingerprint
from pipeline.io import (
    ArtifactError,
    atomic_save,
    atomic_write_text,
    read_json,
    read_tensors,
    sha256_file,
)
from pipeline.maths.stats import TeacherStats, online_teacher_stats
from pipeline.tasks.translation import data as TD
from pipeline.tasks.translation.batches import Pairs, token_eval
from pipeline.tasks.translation.systems import (
    decode,
    hypothesis_outputs,
    load_members,
    load_model,
    reference_outputs,
)

RULE = "cache_teacher"
MARGINAL_PAIRS = 2000
"""Training pairs the ensemble's class marginal is averaged over (``init_bias``)."""


def eval_splits(manifest: dict) -> list[str]:
    """The evaluated splits: ``test``, ``shift`` and every ``ood_*``."""
    return ["test", "shift"] + [s for s in manifest["splits"] if s.startswith("ood_")]


def split_pairs(data_dir, split: str, vocab: int, size: int | None = None) -> tuple[list, Pairs]:
    """The sources of ``split`` (its first ``size``) and, where it has references, its pairs
    (else ``None``)."""
    d = TD.load_split(data_dir, split, vocab)
    n = len(d["src"]) if not size else min(int(size), len(d["src"]))
    pairs = Pairs(d["src"][:n], d["tgt"][:n]) if "tgt" in d else None
    return d["src"][:n], pairs


@torch.no_grad()
def tail_log_mean(members, pairs: Pairs, device, batch: int = 64) -> torch.Tensor:
    """``[R]`` per reference token: the mean of ``ln pi_bar_c`` over the ``V - 1`` classes
    below the ensemble's top one (how small the tail is, the paper's regime)."""
    out = []
    for i in range(0, len(pairs), batch):
        x = pairs.packed(range(i, min(i + batch, len(pairs)))).to(device)
        pbar = sum(torch.softmax(m(x).double(), -1) for m in members) / len(members)
        logp = torch.log(pbar.clamp_min(1e-300))
        top = logp.max(-1).values
        out.append(((logp.sum(-1) - top) / (logp.shape[1] - 1)).float().cpu())
    return torch.cat(out)


def build_teacher(data_dir, member_files, out, cfg: dict, vocab: int, log=print) -> dict:
    """Decode every evaluated split with each member and with the ensemble and write the
    artifact (module docstring); ``cfg``: the ``teacher`` slice (``beam``, ``alpha``,
    ``batch``, ``eval_size``: sentences per split, null = all). Returns the manifest."""
    data_dir, out = Path(data_dir), Path(out)
    manifest = TD.load_manifest(data_dir)
    device = torch.device("cpu")
    loaded = [load_model(p) for p in member_files]
    members = [m.requires_grad_(False) for m, _ in loaded]
    if any(int(meta["vocab_size"]) != vocab for _, meta in loaded):
        raise ValueError(f"a member of {member_files} is not at V={vocab}")
    names = [f"member-{meta['seed']}" for _, meta in loaded]
    systems = [*zip(names, [[m] for m in members], strict=True), ("ensemble", members)]
    out.mkdir(parents=True, exist_ok=True)
    sha, counts = {}, {}
    for split in eval_splits(manifest):
        src, pairs = split_pairs(data_dir, split, vocab, cfg.get("eval_size"))
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


class OnlineTeacher:
    """What a translation student learns from (``student_teacher``): on every batch the members
    run teacher-forced on the student's batch of pairs, and their logits become the teacher
    statistics (:func:`pipeline.maths.stats.online_teacher_stats`, so EnD2's temperature
    schedule re-tempers the exact member outputs).

    It reads nothing of the teacher artifact (``TaskSpec.students_read_teacher`` is false: a
    change of its decoding retrains no student); the evaluation checks that the student's
    members are the artifact's.

    Args:
        member_files: the members; train: the job's training pairs; val: validation pairs.
    """

    def __init__(self, member_files, vocab, train: Pairs, val: Pairs, method, options, device):
        self.member_sha256 = [sha256_file(p) for p in member_files]
        self.members = load_members(member_files, vocab, device)
        self.train, self.val, self.device = train, val, device
        self.method, self.options = method, options
        self.need_floored = methods.get(method).needs_floored
        self._cache = None

    @torch.no_grad()
    def member_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The members' float32 logits ``[R, V]`` on the packed batch ``x``."""
        return [m(x).float() for m in self.members]

    def stats(self, idx: torch.Tensor, progress: float) -> TeacherStats:
        """Teacher statistics of the target tokens of train pairs ``idx`` (logit-row order)."""
        temperature, smoothing = methods.member_transform(self.method, self.options, progress)
        x = self.train.packed(idx).to(self.device)
        return online_teacher_stats(
            self.member_logits(x),
            temperature=temperature,
            smoothing=smoothing,
            need_floored=self.need_floored,
        )

    @torch.no_grad()
    def _val_cache(self, batch: int = 64) -> list[dict[str, torch.Tensor]]:
        """Per batch of val pairs: input, targets, the ensemble's ``pbar``, its top-1, its
        log-probability of the target and the members' agreement with its top-1 (computed once
        per job; the learning curve then runs the student alone)."""
        if self._cache is None:
            self._cache = []
            for i in range(0, len(self.val), batch):
                rows = range(i, min(i + batch, len(self.val)))
                x = self.val.packed(rows).to(self.device)
                y = self.val.targets(rows).to(self.device)
                z = self.member_logits(x)
                pbar = sum(torch.softmax(zj, -1) for zj in z) / len(z)
                top = pbar.argmax(-1)
                lp_y = torch.stack([torch.log_softmax(zj, -1)[torch.arange(len(y)), y] for zj in z])
                self._cache.append(
                    {
                        "x": x,
                        "y": y,
                        "pbar": pbar,
                        "top": top,
                        "ens_logp_y": torch.logsumexp(lp_y.double(), 0) - math.log(len(z)),
                        "member_agree": sum((zj.argmax(-1) == top).double() for zj in z) / len(z),
                    }
                )
        return self._cache

    @torch.no_grad()
    def curve(self, model) -> dict[str, float]:
        """One learning-curve point on the val pairs: top-1 agreement with the ensemble, the NLL
        gap to it, the mean KL(pi_bar || softmax z), and the members' mean agreement."""
        agree, gap, kl, members, count = 0, 0.0, 0.0, 0.0, 0
        for b in self._val_cache():
            logp = torch.log_softmax(model(b["x"]).float(), -1)
            pbar, y = b["pbar"], b["y"][:, None]
            agree += int((logp.argmax(-1) == b["top"]).sum())
            gap += float((b["ens_logp_y"] - logp.gather(1, y)[:, 0].double()).sum())
            kl += float((torch.xlogy(pbar, pbar) - pbar * logp).sum(dtype=torch.float64))
            members += float(b["member_agree"].sum())
            count += len(b["y"])
        return {
            "val_agreement": agree / count,
            "val_nll_gap": gap / count,
            "val_kl": kl / count,
            "member_agreement": members / count,
        }

    @torch.no_grad()
    def log_marginal(self, pairs: int = MARGINAL_PAIRS) -> torch.Tensor:
        """``[V]`` ln of the ensemble's mean pi_bar over the target tokens of the first
        ``pairs`` training pairs."""
        total, count = None, 0
        n = min(pairs, len(self.train))
        for i in range(0, n, 64):
            x = self.train.packed(range(i, min(i + 64, n))).to(self.device)
            pbar = sum(torch.softmax(z.double(), -1) for z in self.member_logits(x)) / len(
                self.members
            )
            total = pbar.sum(0) if total is None else total + pbar.sum(0)
            count += pbar.shape[0]
        return torch.log((total / count).clamp_min(1e-30)).float()

    def validate(self, model, epoch: int) -> dict[str, float]:
        """Token accuracy, NLL and top-1 agreement with the ensemble on the val pairs."""
        row = token_eval(model, self.val, self.device)
        with torch.no_grad():
            agree = sum(
                int((model(b["x"]).argmax(-1) == b["top"]).sum()) for b in self._val_cache()
            )
        row["val_agreement"] = agree / sum(len(b["y"]) for b in self._val_cache())
        return row
