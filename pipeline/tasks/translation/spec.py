"""The translation task's spec (torch-free): the class-count sweep over target vocabularies,
its splits, tables, figures, what it publishes, and its config checks."""

from __future__ import annotations

from pipeline.figure_registry import Figure
from pipeline.tasks import Published, TaskSpec


def splits(config: dict) -> list[str]:
    """The prepared splits: train/valid/test, the shift books and the OOD sets."""
    return ["train", "valid", "test", "shift"] + [f"ood_{s}" for s in config["ood"]["sets"]]


def raw_inputs(config: dict) -> list[str]:
    """The unpacked Debian packages the corpus is read from."""
    root = config["dataset"]["root"]
    files = [f"{root}/usr/share/sword/mods.d"]
    if "austen" in config["ood"]["sets"]:
        files.append(f"{root}/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb")
    return files


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
            "speed": "Training throughput (target tokens/s) and slowdown against cross-entropy "
            "training of the same model (the members).",
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
)
"""The translation task: Spanish -> English Bible verses at V target sub-words (the class-count
sweep), Transformer members and students, the members as an online teacher."""
