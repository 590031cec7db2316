"""The token task's spec (torch-free): the class-count sweep's splits, tables, figures, what it
publishes, and its config checks."""

from __future__ import annotations

from pipeline.errors import ConfigError
from pipeline.figure_registry import Figure
from pipeline.tasks import Published, TaskSpec
from pipeline.tasks.text.splits import residues


def splits(config: dict) -> list[str]:
    """The prepared splits: train/val/test and the OOD sets."""
    return ["train", "val", "test"] + [f"ood_{s}" for s in config["ood"]["sets"]]


def raw_inputs(config: dict) -> list[str]:
    """The corpus files (unpacked Debian packages) the token task reads."""
    root = config["dataset"]["root"]
    bibles = {"kjv", "spanish"} & set(config["ood"]["sets"])
    return [f"{root}/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"] + (
        [f"{root}/usr/share/sword/mods.d"] if bibles else []
    )


def check(config: dict) -> None:
    """Distinct chapter residues for val and test; the sweep figure's OOD set is one of the
    run's, its headline groups are student groups."""
    val_mod, test_mod = residues(config.get("dataset") or {})
    if val_mod == test_mod:
        raise ConfigError("dataset.test_mod", test_mod, "a residue other than dataset.val_mod")
    figure = config.get("figure") or {}
    sets = config["ood"]["sets"]
    if "ood_set" in figure and figure["ood_set"] not in sets:
        raise ConfigError("figure.ood_set", figure["ood_set"], f"one of ood.sets {sets}")
    groups = list(config["students"]["methods"])
    for group in (g.strip() for g in str(figure.get("headline") or "").split(",") if g.strip()):
        if group not in groups:
            raise ConfigError("figure.headline", group, f"one of students.methods {groups}")


SPEC = TaskSpec(
    name="text",
    schema="text.schema.yaml",
    sweeps_classes=True,
    raw_inputs=raw_inputs,
    data_splits=splits,
    # the train split holds the members' features (pipeline.tasks.text.teacher)
    teacher_splits=lambda config: [s for s in splits(config) if s != "val"],
    arrays="per_sequence.safetensors",
    tables={
        "sweep": ("csv",),
        **{
            name: ("csv", "md")
            for name in ("convergence", "main", "prr", "confidence", "ood", "ood_main", "speed")
        },
    },
    figures=(
        Figure(
            "class_sweep", "class_sweep", ("sweep", "shares"), ("ood_set", "measure", "headline")
        ),
        Figure("learning_curves", "learning_curves", ("curves",)),
        Figure("token_gradients", "token_gradients", ("token_profile", "token_gate")),
    ),
    palette_from="sweep",
    published=Published(
        tables={
            "convergence": "The convergence check per V: top-1 agreement with the ensemble "
            "on test tokens of a single member (mean ± std over members) and of every "
            "student group (mean ± std over seeds); the students count as converged where "
            "plain KD (EnD) agrees at least as well as a single member does.",
            "main": "Test tokens per vocabulary size V: accuracy, top-1 agreement with the "
            "ensemble, NLL (nats/token), perplexity.",
            "ood_main": "Sequence-level OOD detection ROC-AUC (test sentences vs permuted "
            "sentences, King James Bible verses, Reina-Valera Spanish verses; OOD positive) "
            "of total uncertainty (TU), knowledge uncertainty (MI) and −(1/L) ln P(y|x); every "
            "measure: tables/ood.md.",
            "prr": "Token misclassification detection: prediction rejection ratio per measure.",
            "confidence": "How confident the members and the ensemble are on the test tokens: "
            "mean top probability, the shares of tokens whose top class holds more than 0.5 "
            "and 0.9, and the ensemble's mean ln π̄ over the classes below its top one (the "
            "translation task's table has the same columns).",
            "speed": "Training throughput (target tokens/s of the steps, validation excluded, "
            "one thread) and slowdown against cross-entropy training of the same model (the "
            "members); the first steps include torch.compile of the fused losses.",
        },
        figures=("class_sweep", "learning_curves", "token_gradients"),
        marker="text-results",
        doc="text_results.md",
    ),
    check=check,
    curves=True,
    log_marginal=True,
    gradient_diagnostic=True,
)
