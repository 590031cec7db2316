"""The translation task's spec (torch-free): the class-count sweep over target vocabularies,
its splits, tables, figures, what it publishes, and its config checks."""

from __future__ import annotations

from pipeline.errors import ConfigError
from pipeline.figure_registry import Figure
from pipeline.tasks import Published, TaskSpec


def _has_shift(config: dict) -> bool:
    ds = config["dataset"]
    return ds["name"] != "parallel_text" or "shift" in ds.get("files", {})


def splits(config: dict) -> list[str]:
    """The prepared splits: train/valid/test, the shift set (the Bible's held-out books; a
    parallel corpus's ``files.shift``, where given) and the OOD sets."""
    shift = ["shift"] if _has_shift(config) else []
    ood = [*config["ood"].get("sets", []), *(config["ood"].get("files") or {})]
    return ["train", "valid", "test", *shift] + [f"ood_{s}" for s in ood]


def raw_inputs(config: dict) -> list[str]:
    """The files the corpus is read from: the unpacked Debian packages, or the parallel files."""
    ds = config["dataset"]
    root = ds["root"]
    ood = [f"{root}/{rel}" for rel in (config["ood"].get("files") or {}).values()]
    if ds["name"] == "parallel_text":
        pairs = [f"{root}/{f[side]}" for f in ds["files"].values() for side in ("source", "target")]
        return pairs + ood
    files = [f"{root}/usr/share/sword/mods.d"]
    if "austen" in config["ood"].get("sets", []):
        files.append(f"{root}/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb")
    return files + ood


def check(config: dict) -> None:
    """A parallel corpus names its files and has no Austen OOD set (that one reads the Debian
    packages); a joint vocabulary is one size; ``ensemble_translations`` goes with
    ``students.targets: ensemble``."""
    ds = config["dataset"]
    if ds["name"] == "parallel_text":
        if "austen" in config["ood"].get("sets", []):
            raise ConfigError("ood.sets", "austen", "[permuted] with dataset.name parallel_text")
        for split in ("train", "valid", "test"):
            if split not in ds.get("files", {}):
                raise ConfigError(f"dataset.files.{split}", None, "{source: ..., target: ...}")
    else:
        if "files" in ds:
            raise ConfigError("dataset.files", ds["files"], "only with dataset.name parallel_text")
        for key in ("valid_size", "test_size"):
            if key not in ds:
                raise ConfigError(f"dataset.{key}", None, "the verses drawn for the split")
    clash = set(config["ood"].get("sets", [])) & set(config["ood"].get("files") or {})
    if clash:
        raise ConfigError("ood.files", sorted(clash), "names other than ood.sets'")
    if ds.get("joint_vocab") and len(config["vocab_sizes"]) != 1:
        raise ConfigError("vocab_sizes", config["vocab_sizes"], "one size with joint_vocab")
    if not ds.get("joint_vocab") and "source_vocab" not in ds:
        raise ConfigError("dataset.source_vocab", None, "a size (or dataset.joint_vocab: true)")
    if "ensemble_translations" in config and config["students"].get("targets") != "ensemble":
        raise ConfigError(
            "ensemble_translations",
            config["ensemble_translations"],
            "only with students.targets: ensemble",
        )


SPEC = TaskSpec(
    name="translation",
    schema="translation.schema.yaml",
    sweeps_classes=True,
    raw_inputs=raw_inputs,
    data_splits=splits,
    teacher_splits=lambda config: [s for s in splits(config) if s not in ("train", "valid")],
    arrays="per_sentence.safetensors",
    tables={
        "sweep": ("csv",),
        **{
            name: ("csv", "md")
            for name in (
                "convergence",
                "main",
                "shift",
                "confidence",
                "prr",
                "ood",
                "ood_main",
                "speed",
            )
        },
    },
    figures=(
        Figure("translation_sweep", "translation_sweep", ("sweep",)),
        Figure("translation_curves", "translation_curves", ("curves",)),
        Figure("translation_gradients", "translation_gradients", ("token_profile", "token_gate")),
    ),
    palette_from="sweep",
    check=check,
    published=Published(
        tables={
            "convergence": "The convergence bar per V: test BLEU and top-1 agreement with the "
            "ensemble of a single member (mean ± std over members) and of EnD (over seeds); "
            "converged where EnD is within 0.5 BLEU of a member or agrees at least as well.",
            "main": "Test set per target vocabulary V: corpus BLEU and chrF (sacrebleu, "
            "nrefs:1|case:mixed|tok:13a|smooth:exp and chrF nc:6|nw:0; beam search), and "
            "under teacher forcing on the references the NLL (nats/token), token accuracy "
            "and top-1 agreement with the ensemble.",
            "confidence": "How confident the members and the ensemble are on the test "
            "reference tokens: mean top probability, share of tokens whose top class holds "
            "more than 0.5 and 0.9 (label smoothing 0.1 caps a member near 0.9), mean ln π̄ "
            "of the classes below the ensemble's top one.",
            "shift": "The shift books (Song of Songs, Revelation: never trained on).",
            "prr": "Sentence-level error detection: prediction rejection ratio of each "
            "sequence-level measure, with 1 − sentence chrF / 100 as the loss.",
            "ood_main": "Sequence-level OOD detection ROC-AUC against the test sources "
            "(shift books, word-permuted sources, English Austen sentences as source).",
            # ``speed`` (tables/speed.md, the jobs' own throughput) is written but not
            # published: on a shared 2-core machine a job's speed is its neighbours' as much as
            # its method's (translation_full's three members at V = 4,000, one model and one
            # data set, took 314 to 3,335 s an epoch); the methods' speeds are the benchmark's
            # (benchmarks/bench_translation.py, docs/performance.md).
        },
        figures=("translation_sweep", "translation_curves", "translation_gradients"),
        marker="translation-results",
        doc="translation.md",
    ),
    prepare_keys=("dataset", "ood", "vocab_sizes"),
    students_read_teacher=False,
    curves=True,
    log_marginal=True,
    gradient_diagnostic=True,
    ensemble_targets=True,
)
"""The translation task: Spanish -> English Bible verses at V target sub-words (the class-count
sweep), Transformer members and students, the members as an online teacher."""
