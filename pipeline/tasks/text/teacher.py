"""The token task's teacher artifact (``rule cache_teacher``): the per-token outputs of the
evaluation splits and, for students, the members' features on the train split.

Why features: caching the ensemble itself for the train split would need, per token, a V-wide
pi_bar and l_bar (EnD2 needs l_bar for every class, the tail included): at V = 5,000 and 650k
train tokens that is 12 GB even in float16, and a top-k summary would change exactly the tail
terms whose gradients the experiment is about. But a member's logits are its output layer applied
to its last hidden state, ``z = W h + b`` with ``h`` of ``d = 64`` values, so the cache stores
``h`` for every train token and member (``features [tokens, M, d]``, float32) and the members'
output layers (``head_weight [M, V, d]``, ``head_bias [M, V]``): ~0.5 GB at any V, and each
student batch rebuilds every member's logits exactly with one matmul, without running the
member LSTMs (:class:`OnlineTeacher`). The statistics are then built from those logits on every
step (:func:`pipeline.maths.stats.online_teacher_stats`), so EnD2's temperature schedule and
smoothing re-temper the exact member outputs. The image task caches the sufficient statistics
instead ([N, K] at K = 10 is smaller than [N, M, d], and its members have no schedule-free
linear head to share); see ``docs/token_task.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline import __version__, methods
from pipeline.curves import curve_point, ensemble_view
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
from pipeline.maths.tokens import categorical_tokens, ensemble_tokens, tail_log_mean
from pipeline.progress import JOB, Progress
from pipeline.tasks.text import corpus as TD
from pipeline.tasks.text.model import load_lm, load_members, member_logits, token_eval, trim

RULE = "cache_teacher"  # the rule that writes the teacher cache
TRAIN = "train"  # the teacher artifact's split of the train features
TAIL = "tail_log_mean"
"""The test split's key of the ensemble's mean ``ln pi_bar_c`` over the classes below its top
one, per token (:func:`pipeline.maths.tokens.tail_log_mean`)."""
MARGINAL_SENTENCES = 2000
"""Training sequences the ensemble's class marginal is averaged over (``init_bias``)."""


def eval_splits(manifest: dict) -> list[str]:
    """The splits that are scored: ``test`` and every ``ood_*``."""
    return ["test"] + [s for s in manifest["splits"] if s.startswith("ood_")]


def batches(seqs: dict, batch: int):
    """``(x [b, L], y [T])`` per batch of ``batch`` sequences: trimmed inputs, non-padding
    targets in the order the model emits its logits."""
    n = seqs["inputs"].shape[0]
    for i in range(0, n, batch):
        x = trim(seqs["inputs"][i : i + batch])
        y = seqs["targets"][i : i + batch, : x.shape[1]]
        yield x, y[y >= 0]


@torch.no_grad()
def build_teacher(
    data_dir: Path, vocab: int, member_paths: list[Path], out: Path, batch: int = 32
) -> dict:
    """Per-token outputs of every member and of the ensemble on the evaluation splits:
    ``out/{split}.safetensors`` with ``target``, ``seq`` (sequence index) and
    ``{system}.{logp_y, pred, <score>}``, on ``test`` also :data:`TAIL` (the ensemble's);
    ``out/manifest.json``."""
    manifest = TD.load_manifest(data_dir)
    loaded = [load_lm(p) for p in member_paths]
    members = [m for m, _ in loaded]
    for p, m in zip(member_paths, members, strict=True):
        if m.vocab_size != vocab:
            raise ValueError(f"member {p} has V={m.vocab_size}, expected {vocab}")
    names = [f"member-{meta['seed']}" for _, meta in loaded]  # systems are named by seed
    out.mkdir(parents=True, exist_ok=True)
    tokens, sha = {}, {}
    total = sum(int(manifest["splits"][s]["n"]) for s in eval_splits(manifest))
    progress = Progress(total, f"{JOB.name} (sequences, all members)", unit="seq")
    for split in eval_splits(manifest):
        seqs = TD.load_sequences(data_dir, split, vocab)
        parts: dict[str, list[torch.Tensor]] = {}
        for x, y in batches(seqs, batch):
            z = [m(x) for m in members]
            progress.update(x.shape[0])
            for p, zj in zip(member_paths, z, strict=True):
                if not bool(zj.isfinite().all()):
                    raise ArtifactError(
                        p,
                        f"gives non-finite outputs on split {split!r} (diverged?)",
                        "train_member",
                    )
            rows = {"ensemble": ensemble_tokens(z, y)}
            for name, zj in zip(names, z, strict=True):
                rows[name] = categorical_tokens(zj, y)
            for system, d in rows.items():
                for key, v in d.items():
                    parts.setdefault(f"{system}.{key}", []).append(v)
            parts.setdefault("target", []).append(y.to(torch.int32))
            if split == "test":  # how small the ensemble's tail is (the paper's regime)
                parts.setdefault(TAIL, []).append(tail_log_mean(z).float())
        tensors = {k: torch.cat(v) for k, v in parts.items()}
        lengths = (seqs["targets"] >= 0).sum(1)
        tensors["seq"] = torch.repeat_interleave(torch.arange(len(lengths)), lengths).int()
        atomic_save(tensors, out / f"{split}.safetensors")
        tokens[split] = int(tensors["target"].numel())
        sha[split] = sha256_file(out / f"{split}.safetensors")
    train = train_features(data_dir, vocab, members, batch)
    atomic_save(train, out / f"{TRAIN}.safetensors")
    sha[TRAIN] = sha256_file(out / f"{TRAIN}.safetensors")
    info = {
        "pipeline_version": __version__,
        "code_sha256": code_fingerprint("teacher", "text"),
        "vocab": vocab,
        "members": [str(p) for p in member_paths],
        "member_sha256": [sha256_file(p) for p in member_paths],
        "splits": eval_splits(manifest),
        "tokens": tokens,
        "sha256": sha,
        TRAIN: {
            "tokens": int(train["features"].shape[0]),
            "sequences": int(train["lengths"].numel()),
            "dim": int(train["features"].shape[2]),
            "bytes": sum(t.numel() * t.element_size() for t in train.values()),
        },
    }
    atomic_write_text(json.dumps(info, indent=2), out / "manifest.json")
    return info


@torch.no_grad()
def train_features(data_dir: Path, vocab: int, members: list, batch: int) -> dict:
    """The members' last hidden states on every target token of the train split: ``features
    [tokens, M, d]`` float32 in the order the members emit logits (sequence by sequence),
    ``lengths [N]`` (tokens per train sequence), and the output layers ``head_weight [M, V, d]``,
    ``head_bias [M, V]``."""
    seqs = TD.load_sequences(data_dir, "train", vocab)
    progress = Progress(len(seqs["lengths"]), f"{JOB.name} (train features)", unit="seq")
    parts = []
    for x, _ in batches(seqs, batch):
        parts.append(torch.stack([m.hidden(x).float() for m in members], 1))
        progress.update(x.shape[0])
    return {
        "features": torch.cat(parts).contiguous(),
        "lengths": seqs["lengths"].to(torch.int64),
        "head_weight": torch.stack([m.head.weight.detach().float() for m in members]),
        "head_bias": torch.stack([m.head.bias.detach().float() for m in members]),
    }


def check_manifest(teacher_dir: Path, vocab: int, member_files: list[Path]) -> dict:
    """The teacher manifest of ``teacher_dir``, checked against ``vocab`` and the members
    (``member_files=None``: not checked)."""
    info = read_json(Path(teacher_dir) / "manifest.json", RULE)
    if int(info["vocab"]) != vocab:
        raise ArtifactError(
            teacher_dir, f"the teacher cache is for V={info['vocab']}, not {vocab}", RULE
        )
    if member_files is not None and [sha256_file(p) for p in member_files] != info["member_sha256"]:
        raise ArtifactError(
            teacher_dir,
            f"the teacher cache was built from other members than {[str(p) for p in member_files]}",
            RULE,
        )
    return info


def load_split(teacher_dir: Path, split: str, info: dict) -> dict[str, torch.Tensor]:
    """One split of the teacher cache, checked against the sha256 in its manifest ``info``."""
    return read_tensors(
        Path(teacher_dir) / f"{split}.safetensors", sha256=info["sha256"][split], rule=RULE
    )


class TrainFeatures:
    """Members' logits on train sequences from their cached features (:func:`train_features`).

    Args:
        features: ``[tokens, M, d]`` float32; ``starts [N]``, ``lengths [N]``: the first feature
            row and the token count of each of the job's ``N`` train sequences.
        head_weight, head_bias: ``[M, V, d]``, ``[M, V]`` the members' output layers.
        device: where the features and heads live (~0.5 GB for the whole Austen train split).
    """

    def __init__(self, features, starts, lengths, head_weight, head_bias, device):
        self.starts, self.lengths = starts.long(), lengths.long()
        self.feats = features.to(device)
        self.weight, self.bias = head_weight.to(device), head_bias.to(device)

    @classmethod
    def from_tensors(cls, t: dict, rows: torch.Tensor | None, device) -> TrainFeatures:
        """From the tensors :func:`train_features` writes, for the train sequences ``rows``
        (``None``: all, in order)."""
        lengths = t["lengths"]
        rows = torch.arange(len(lengths)) if rows is None else rows
        starts = torch.cumsum(lengths, 0) - lengths
        return cls(
            t["features"], starts[rows], lengths[rows], t["head_weight"], t["head_bias"], device
        )

    @classmethod
    def load(cls, teacher_dir, info: dict, inputs: torch.Tensor, device) -> TrainFeatures:
        """The features of the teacher cache ``teacher_dir`` (manifest ``info``) for the job's
        train ``inputs [N, L]``: the whole train split or the subset
        :func:`~pipeline.tasks.text.corpus.train_rows` picks for ``train_sentences: N``.

        Checked: the file's sha256 against the manifest, its shapes against the members' (M, V)
        and, sequence by sequence, its token counts against ``inputs``, so a cache of another
        corpus or vocabulary is refused with the rule that rebuilds it."""
        path = Path(teacher_dir) / f"{TRAIN}.safetensors"
        if TRAIN not in info.get("sha256", {}):
            raise ArtifactError(path, "is missing from the teacher cache (an older cache?)", RULE)
        t = load_split(teacher_dir, TRAIN, info)
        feats, lengths, weight, bias = (
            t[k] for k in ("features", "lengths", "head_weight", "head_bias")
        )
        m, vocab = len(info["member_sha256"]), int(info["vocab"])
        if (
            feats.ndim != 3
            or feats.shape[1] != m
            or weight.shape != (m, vocab, feats.shape[2])
            or bias.shape != (m, vocab)
            or int(lengths.sum()) != feats.shape[0]
        ):
            raise ArtifactError(path, f"does not hold features of {m} members at V={vocab}", RULE)
        rows = TD.train_rows(len(lengths), len(inputs))
        kept = lengths if rows is None else lengths[rows]
        if len(kept) != len(inputs) or not torch.equal(kept, (inputs >= 0).sum(1)):
            raise ArtifactError(path, "was built from another train split", RULE)
        return cls.from_tensors(t, rows, device)

    def tokens(self, idx: torch.Tensor) -> torch.Tensor:
        """``[T]`` feature rows of the target tokens of ``idx``, in the members' logit order."""
        lens = self.lengths[idx]
        first = torch.repeat_interleave(self.starts[idx] - (torch.cumsum(lens, 0) - lens), lens)
        return first + torch.arange(int(lens.sum()))

    @torch.no_grad()
    def logits(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Each member's float32 logits ``[T, V]`` on the train sequences ``idx`` (as
        :func:`member_logits` gives them on those sequences)."""
        h = self.feats[self.tokens(idx).to(self.feats.device)]
        return [
            F.linear(h[:, j].contiguous(), self.weight[j], self.bias[j]) for j in range(h.shape[1])
        ]


class OnlineTeacher:
    """What a token-task student learns from (``student_teacher``): on every batch, each
    member's exact logits rebuilt from the teacher cache's train features (one matmul with the
    member's output layer; :class:`TrainFeatures`) and their statistics built by
    :func:`online_teacher_stats` (so EnD2's temperature schedule and smoothing re-temper the exact
    member outputs). The members themselves run only on the val sequences (learning curve,
    validation, the class marginal).

    Args:
        teacher_dir: the run's teacher cache, whose manifest must name the same members.
        member_files: the members' weights; ``inputs``: padded train inputs ``[N, L]``;
        val: padded validation sequences; method, options: the student's method and options.
    """

    def __init__(self, teacher_dir, member_files, vocab, inputs, val, method, options, device):
        info = check_manifest(teacher_dir, vocab, member_files)
        self.members = load_members(member_files, vocab, device)
        self.member_sha256 = info["member_sha256"]  # checked equal to the files' just now
        self.features = TrainFeatures.load(teacher_dir, info, inputs, device)
        self.inputs, self.val, self.device = inputs, val, device
        self.method, self.options = method, options
        self.need_floored = methods.get(method).needs_floored
        self._cache = None  # the learning curve's view of the ensemble (_val_cache)

    def stats(self, idx: torch.Tensor, progress: float, x=None) -> TeacherStats:
        """The teacher statistics of the target tokens of train sequences ``idx`` at
        ``progress`` (epochs done: the EnD2 temperature schedule's clock; the members' features
        of ``idx`` are cached, so the student's input ``x`` is not needed)."""
        temperature, smoothing = methods.member_transform(self.method, self.options, progress)
        return online_teacher_stats(
            self.features.logits(idx),
            temperature=temperature,
            smoothing=smoothing,
            need_floored=self.need_floored,
        )

    @torch.no_grad()
    def _val_cache(self, batch: int = 64) -> list[dict[str, torch.Tensor]]:
        """What the learning curve compares a student with, computed once per job: per batch of
        val sequences :func:`pipeline.curves.ensemble_view`. At V = 10k and 500 val sentences
        ``pbar`` is ~0.5 GB; the members then never run again for the
        curve (a point is one student pass, ~10x cheaper than re-running them)."""
        if self._cache is None:
            self._cache = []
            n = self.val["inputs"].shape[0]
            for i in range(0, n, batch):
                x = trim(self.val["inputs"][i : i + batch]).to(self.device)
                y = self.val["targets"][i : i + batch, : x.shape[1]]
                y = y[y >= 0].to(self.device)
                self._cache.append(ensemble_view(x, y, member_logits(self.members, x)))
        return self._cache

    @torch.no_grad()
    def curve(self, model) -> dict[str, float]:
        """One learning-curve point on the val sequences: top-1 agreement with the ensemble,
        the NLL gap to the ensemble (student NLL - ensemble NLL of the val tokens) and the mean
        KL(pi_bar || softmax z), all from the student's point prediction softmax(z) as the
        evaluation reads it (for a Dirichlet student too: ``docs/method.md``, "Student"); plus
        the members' mean agreement with the ensemble, the convergence criterion's bar.
        Elementwise float32, sums float64 (:meth:`_val_cache`)."""
        return curve_point(model, self._val_cache())

    @torch.no_grad()
    def log_marginal(self, sentences: int = MARGINAL_SENTENCES) -> torch.Tensor:
        """``[V]`` ln of the ensemble's mean pi_bar over the target tokens of the first
        ``sentences`` training sequences (the student's ``init_bias: log_marginal``)."""
        total, count = None, 0
        inputs = self.inputs[:sentences]
        for i in range(0, inputs.shape[0], 64):
            x = trim(inputs[i : i + 64]).to(self.device)
            z = member_logits(self.members, x)
            pbar = sum(torch.softmax(zj.double(), -1) for zj in z) / len(z)
            total = pbar.sum(0) if total is None else total + pbar.sum(0)
            count += pbar.shape[0]
        return torch.log((total / count).clamp_min(1e-30)).float()

    def validate(self, model, epoch: int) -> dict[str, float]:
        """Token accuracy, NLL and top-1 agreement with the ensemble on the val sequences."""
        row = token_eval(model, self.val, self.device)
        agree, count = 0, 0
        with torch.no_grad():
            for i in range(0, self.val["inputs"].shape[0], 256):
                x = trim(self.val["inputs"][i : i + 256]).to(self.device)
                ens = sum(torch.softmax(z, -1) for z in member_logits(self.members, x)).argmax(-1)
                agree += int((model(x).argmax(-1) == ens).sum())
                count += len(ens)
        row["val_agreement"] = agree / count
        return row
