"""The translation task (issue 30): Spanish -> English Bible verses, the target sub-word
vocabulary V as the class-count sweep, Transformer members and students, the members as an online
teacher. The interface functions are documented in :mod:`pipeline.tasks`; ``num_classes`` is the
target vocabulary size V everywhere.

* :mod:`.corpus`      verse alignment, cleaning, splits (shift books, OOD sets)
* :mod:`.vocab`       SentencePiece vocabularies (the target size is the class-count axis)
* :mod:`.data`        the prepared data: tokenizers, encoded splits, manifest
* :mod:`.model`       the Transformer encoder-decoder with an incremental decoder state
* :mod:`.decode`      beam search and greedy search, for one model or an ensemble
* :mod:`.batches`     sentence pairs, token-based batches, teacher-forced validation
* :mod:`.systems`     hypotheses and per-token outputs of a member, the ensemble, a student
* :mod:`.teacher`     the teacher artifact: the members' and the ensemble's decodes
* :mod:`.online`      the online teacher the students learn from
* :mod:`.gradients`   the real-data gradient diagnostic
* :mod:`.evaluation`  BLEU/chrF, sequence-level uncertainty, PRR, OOD of one system
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

__all__ = [
    *INTERFACE,
    "gradient_diagnostic",
    "merge_translations",
    "translate_shard",
    "translated_rows",
]
# Each function imports the implementation it needs inside its body (pipeline.imports follows
# those imports per stage); importing this package imports no torch.


def prepare(cfg: dict, out: str | Path) -> dict:
    from pipeline.tasks.translation.data import prepare

    return prepare(cfg, out)


def describe(manifest: dict) -> str:
    lines = [f"aligned verse pairs={manifest['pairs']} dropped={manifest['dropped']}"]
    lines += [
        f"{split:14s} n={e['n']:6d} source tokens={e['source_tokens']:8d} "
        + " ".join(f"{k}={v}" for k, v in e.items() if k.startswith("target_tokens"))
        for split, e in manifest["splits"].items()
    ]
    return "\n".join(lines)


def _vocab(num_classes: int | None) -> int:
    if num_classes is None:
        raise ValueError("the translation task needs the target vocabulary V (--num-classes)")
    return int(num_classes)


def training_set(
    data_dir: str | Path, cfg: dict, num_classes: int | None, device: torch.device
) -> TrainingSet:
    """The train pairs at V target classes (``cfg["train_pairs"]``: one fixed subset, the same
    for every job) in token-based batches (``batch_size``: pairs per batch on average), and the
    first ``cfg["val_size"]`` valid pairs. With ``cfg["targets"] == "ensemble"`` (students) the
    targets are the ensemble's translations of the sources, read from ``cfg["translations"]``
    (:mod:`.distill_data`); the validation pairs keep their references."""
    from pipeline.engine import Feed, TrainingSet
    from pipeline.tasks.translation.batches import Pairs, keep_rows, token_batches
    from pipeline.tasks.translation.data import load_manifest, load_split

    vocab = _vocab(num_classes)
    manifest = load_manifest(data_dir)
    d = load_split(data_dir, "train", vocab)
    train = Pairs(d["src"], d["tgt"])
    rows = keep_rows(len(train), cfg.get("train_pairs"))
    if rows is not None:
        train = train.subset(rows)
    targets = None  # the references, else the ensemble's translations (students.targets)
    if cfg.get("targets", "reference") == "ensemble":
        from pipeline.tasks.translation.distill_data import load_targets

        if not cfg.get("translations"):
            from pipeline.errors import ConfigError

            raise ConfigError(
                "students.targets", "ensemble", "reference, unless the job names its translations"
            )
        rows = range(len(d["src"])) if rows is None else rows.tolist()
        tgt, targets = load_targets(cfg["translations"], data_dir, vocab, rows)
        train = Pairs(train.src, tgt)
    v = load_split(data_dir, "valid", vocab)
    size = int(cfg.get("val_size") or len(v["src"]))
    val = Pairs(v["src"][:size], v["tgt"][:size])
    sha = manifest["splits"]["train"]["sha256"]

    def stream(batches, g, epoch_seed):
        for idx in batches:
            yield idx, train.packed(idx)

    return TrainingSet(
        feed=Feed(len(train), stream, token_batches(train.lengths())),
        inputs=train,
        targets=lambda idx: train.targets(idx).to(device),
        info={"vocab_size": vocab, "source_vocab": int(manifest["source_vocab"])},
        fp_inputs={"data": sha, "vocab": vocab, "train_pairs": cfg.get("train_pairs")}
        | ({"targets": targets} if targets else {}),
        data_sha256=sha,
        val=val,
        about=f"V={vocab} pairs={len(train)} target tokens={sum(len(t) for t in train.tgt)}",
        data_dir=Path(data_dir),
    )


def build_model(model_cfg: dict, info: dict) -> torch.nn.Module:
    from pipeline.tasks.translation.model import build

    return build(model_cfg, int(info["source_vocab"]), int(info["vocab_size"]))


def load_model(path: str | Path) -> tuple[torch.nn.Module, dict]:
    from pipeline.tasks.translation.model import load_model

    return load_model(path)


def validate(model: torch.nn.Module, ts: TrainingSet, device: torch.device) -> dict[str, float]:
    """Teacher-forced token accuracy and NLL of a member on the val pairs."""
    from pipeline.tasks.translation.batches import token_eval

    return token_eval(model, ts.val, device)


def build_teacher(data_dir, member_files, seeds, out, cfg, num_classes, log=print):
    """The teacher artifact (:func:`.teacher.build_teacher`: every member's and the ensemble's
    decodes of the evaluated splits); samples = sentences x systems."""
    from pipeline.tasks.translation.teacher import build_teacher

    info = build_teacher(data_dir, member_files, out, cfg, _vocab(num_classes), log)
    return info, sum(info["sentences"].values()) * len(info["systems"])


def student_teacher(teacher_dir, member_files, ts: TrainingSet, method, options, device, cfg):
    """A :class:`.teacher.OnlineTeacher`: the members run on every student batch (the teacher
    artifact ``teacher_dir`` is not read: the spec's ``students_read_teacher`` is false)."""
    from pipeline.tasks.translation.online import OnlineTeacher

    vocab = int(ts.info["vocab_size"])
    return OnlineTeacher(member_files, vocab, ts.inputs, ts.val, method, options, device)


def evaluate_system(group, seed, data_dir, teacher_dir, model, meta, cfg, num_classes, device):
    """Metric rows and per-sentence scores of one system (:mod:`.evaluation`)."""
    from pipeline.tasks.translation.evaluation import evaluate_system

    return evaluate_system(
        group, seed, data_dir, teacher_dir, model, meta, cfg, _vocab(num_classes), device
    )


def tables(tidy, histories=None):
    """The sweep tables (:mod:`.summary`)."""
    from pipeline.tasks.translation.summary import tables

    return tables(tidy, histories)


def gradient_diagnostic(data_dir, vocab, teacher_dir, member_files, students, sentences):
    """The real-data gradient diagnostic (:mod:`.gradients`): ``(profile, gate)`` tables."""
    from pipeline.tasks.translation.gradients import run

    return run(data_dir, int(vocab), teacher_dir, member_files, students, sentences)


def figure_module() -> ModuleType:
    """The figure functions its spec's registry names (:mod:`.figures`)."""
    from pipeline.tasks.translation import figures

    return figures


def translated_rows(data_dir, vocab: int, train_pairs: list[int | None]):
    """The train rows whose sources the ensemble translates for the students (``students.
    targets: ensemble``): the union of the readers' subsets (:mod:`.distill_data`)."""
    from pipeline.tasks.translation.data import load_split
    from pipeline.tasks.translation.distill_data import decoded_rows

    return decoded_rows(len(load_split(data_dir, "train", vocab)["src"]), train_pairs)


def translate_shard(data_dir, member_files, vocab: int, rows, cfg: dict, device, out) -> None:
    """Translate the train sources ``rows`` with the ensemble and write them to ``out``."""
    from pipeline.io import atomic_save
    from pipeline.tasks.translation.distill_data import translate_shard as translate

    atomic_save(translate(data_dir, member_files, vocab, rows, cfg, device), Path(out))


def merge_translations(shards, rows, data_dir, member_files, vocab: int, cfg: dict, out) -> dict:
    """Merge the shards (holding exactly ``rows``) into the students' targets folder ``out``."""
    from pipeline.tasks.translation.distill_data import merge

    return merge(shards, rows, data_dir, member_files, vocab, cfg, out)
