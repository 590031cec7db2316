"""The token task: next-token prediction on Jane Austen's novels at V classes (the class-count
sweep), LSTM members and students, the members as an online teacher. The interface functions are
documented in :mod:`pipeline.tasks`; ``num_classes`` is the vocabulary size V everywhere.

* :mod:`.corpus`      the corpora (Debian packages), tokenisation, splits, padded sequences
* :mod:`.model`       the LSTM language model, length-bucketed batches, token validation
* :mod:`.tokens`      per-token outputs and uncertainty scores of members, ensemble, students
* :mod:`.teacher`     the per-token cache of the evaluation splits; the online teacher
* :mod:`.evaluation`  token and sequence metrics of one system
* :mod:`.summary`     the sweep tables
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from pipeline.tasks import INTERFACE

if TYPE_CHECKING:
    import torch

    from pipeline.engine import TrainingSet

__all__ = [*INTERFACE, "gradient_diagnostic"]
# Each function imports the implementation it needs inside its body: the workflow follows those
# imports per stage (pipeline.imports.stage_closure), so an edit reruns only the stages it touches.
# Importing this package imports no torch (its spec module is read while the DAG is built).


def prepare(cfg: dict, out: str | Path) -> dict:
    from pipeline.tasks.text.corpus import prepare

    return prepare(cfg, out)


def describe(manifest: dict) -> str:
    lines = [
        f"words={manifest['num_words']} train word tokens={manifest['train_word_tokens']}",
        f"coverage of the train tokens by the top V-2 words: {manifest['coverage']}",
    ]
    lines += [
        f"{split:14s} n={e['n']:6d} tokens={e['tokens']:7d} unk={e['unk_rate']:.3f}"
        for split, e in manifest["splits"].items()
    ]
    return "\n".join(lines)


def _vocab(num_classes: int | None) -> int:
    if num_classes is None:
        raise ValueError("the text task needs the number of classes V (--num-classes)")
    return int(num_classes)


def training_set(
    data_dir: str | Path, cfg: dict, num_classes: int | None, device: torch.device
) -> TrainingSet:
    """The train sequences at V classes (``cfg["train_sentences"]``: one fixed subset, the same
    for every run) and the first ``cfg["val_size"]`` val sequences."""
    from pipeline.engine import Feed, TrainingSet
    from pipeline.tasks.text.corpus import load_manifest, load_sequences, train_rows
    from pipeline.tasks.text.model import length_batches, targets_of, trim

    vocab = _vocab(num_classes)
    manifest = load_manifest(data_dir)
    train = load_sequences(data_dir, "train", vocab)
    keep = train_rows(len(train["lengths"]), int(cfg.get("train_sentences") or 0))
    if keep is not None:
        train = {k: v[keep] for k, v in train.items()}
    val = load_sequences(data_dir, "val", vocab)
    size = cfg.get("val_size")
    if size:
        val = {k: v[: int(size)] for k, v in val.items()}
    inputs, targets = train["inputs"], train["targets"].to(device)
    sha = manifest["splits"]["train"]["sha256"]

    def stream(batches, g, epoch_seed):
        for idx in batches:
            yield idx, trim(inputs[idx])

    return TrainingSet(
        feed=Feed(int(inputs.shape[0]), stream, length_batches(train["lengths"])),
        inputs=inputs,
        targets=lambda idx: targets_of(targets, idx.to(device), trim(inputs[idx]).shape[1]),
        info={"vocab_size": vocab},
        fp_inputs={"data": sha, "vocab": vocab},
        data_sha256=sha,
        val=val,
        about=f"V={vocab} sequences={len(targets)}",
        data_dir=Path(data_dir),
    )


def build_model(model_cfg: dict, info: dict) -> torch.nn.Module:
    from pipeline.tasks.text.model import build_lm

    return build_lm(model_cfg, int(info["vocab_size"]))


def load_model(path: str | Path) -> tuple[torch.nn.Module, dict]:
    from pipeline.tasks.text.model import load_lm

    return load_lm(path)


def validate(model: torch.nn.Module, ts: TrainingSet, device: torch.device) -> dict[str, float]:
    """Token accuracy and NLL of a member on the val sequences."""
    from pipeline.tasks.text.model import token_eval

    return token_eval(model, ts.val, device)


def build_teacher(data_dir, member_files, seeds, out, cfg, num_classes, log=print):
    """The per-token cache of the evaluation splits (:func:`.teacher.build_teacher`); samples =
    scored tokens x members."""
    from pipeline.tasks.text.teacher import build_teacher

    info = build_teacher(Path(data_dir), _vocab(num_classes), member_files, Path(out))
    log(f"V={info['vocab']} tokens per split: {info['tokens']}")
    return info, sum(info["tokens"].values()) * len(member_files)


def student_teacher(teacher_dir, member_files, ts: TrainingSet, method, options, device, cfg):
    """A :class:`.teacher.OnlineTeacher`: the members' logits rebuilt from the teacher cache's
    train features (checked against the members and the train sequences)."""
    from pipeline.tasks.text.teacher import OnlineTeacher

    vocab = int(ts.info["vocab_size"])
    return OnlineTeacher(
        teacher_dir, member_files, vocab, ts.inputs, ts.val, method, options, device
    )


def evaluate_system(group, seed, data_dir, teacher_dir, model, meta, cfg, num_classes, device):
    """Metric rows and per-sequence scores of one system (:mod:`.evaluation`)."""
    from pipeline.tasks.text.evaluation import evaluate_system

    return evaluate_system(
        group, seed, data_dir, teacher_dir, model, meta, cfg, _vocab(num_classes), device
    )


def tables(tidy, histories=None):
    """The sweep tables (:mod:`.summary`)."""
    from pipeline.tasks.text.summary import tables

    return tables(tidy, histories)


def gradient_diagnostic(data_dir, vocab, teacher_dir, member_files, students, sentences):
    """The real-data gradient diagnostic (:mod:`.gradients`): ``(profile, gate)`` tables."""
    from pipeline.tasks.text.gradients import run

    return run(data_dir, int(vocab), teacher_dir, member_files, students, sentences)


def figure_module() -> ModuleType:
    """The figure functions its spec's registry names (:mod:`.figures`)."""
    from pipeline.tasks.text import figures

    return figures
