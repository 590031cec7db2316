"""Tasks: what differs between an image classifier and a language model, behind one interface.

A task is a package ``pipeline.tasks.<name>`` plus a :class:`TaskSpec` line in :data:`TASKS`. The
stages (``pipeline.stages``) are written once against the functions every task package provides:

=====================  ==========================================================================
``prepare``            ``(cfg, out) -> manifest``: raw data -> prepared splits + manifest.json
``describe``           ``(manifest) -> str``: a summary for the log
``training_set``       ``(data_dir, cfg, num_classes, device) -> engine.TrainingSet``: the
                       training examples as :func:`pipeline.engine.fit` reads them, their
                       targets, the model's metadata, the validation data
``build_model``        ``(model_cfg, info) -> nn.Module`` (logits ``[rows, K]``)
``load_model``         ``(path) -> (model, meta)``: a trained member or student
``validate``           ``(model, training_set, device) -> {val_acc, val_nll}``
``build_teacher``      ``(data_dir, member_files, seeds, out, cfg, num_classes, log)
                       -> (manifest, samples)``: the teacher artifact of the run
``student_teacher``    ``(teacher_dir, member_files, training_set, method, options, device)
                       -> TeacherSource``: what a student learns from (``stats(idx, progress)``,
                       ``validate(model, epoch)``, ``member_sha256``)
``evaluate_system``    ``(group, seed, data_dir, teacher_dir, model, meta, cfg, num_classes,
                       device) -> Evaluation``: tidy metric rows + per-example arrays
``tables``             ``(tidy, histories) -> {name: Table}``: the run's summary tables
=====================  ==========================================================================

This module imports neither torch nor matplotlib: the workflow reads :data:`TASKS` while it
builds the DAG; :func:`load` imports a task's implementation when a stage runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

__all__ = ["INTERFACE", "TASKS", "TaskSpec", "load", "spec"]

INTERFACE = (
    "prepare",
    "describe",
    "training_set",
    "build_model",
    "load_model",
    "validate",
    "build_teacher",
    "student_teacher",
    "evaluate_system",
    "tables",
)
"""The functions every task package provides (the table above)."""


def _image_splits(config: dict) -> list[str]:
    ood = config["ood"]
    folders = ood.get("folders") or {}  # imagefolder shift/OOD sets
    return (
        ["train", "val", "test"]
        + [f"ood_{name}" for name in ood.get("sets", [])]
        + (["shift"] if ood.get("corruptions") else [])
        + [f"ood_{n}" for n, f in folders.items() if f["kind"] == "ood"]
        + [f"shift_{n}" for n, f in folders.items() if f["kind"] == "shift"]
        + (["shift"] if any(f["kind"] == "corruptions" for f in folders.values()) else [])
    )


def _text_splits(config: dict) -> list[str]:
    return ["train", "val", "test"] + [f"ood_{s}" for s in config["ood"]["sets"]]


def _text_raw(config: dict) -> list[str]:
    """The corpus files (unpacked Debian packages) the token task reads."""
    root = config["dataset"]["root"]
    bibles = {"kjv", "spanish"} & set(config["ood"]["sets"])
    return [f"{root}/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"] + (
        [f"{root}/usr/share/sword/mods.d"] if bibles else []
    )


@dataclass(frozen=True)
class TaskSpec:
    """The facts about a task that the workflow needs without importing it.

    Attributes:
        name: ``config["task"]``.
        schema: the config schema (``workflow/schemas/<schema>``).
        sweeps_classes: one sub-run per number of classes K (``config["vocab_sizes"]``),
            laid out as ``<results>/V<K>/...``; otherwise K comes from the data.
        raw_inputs: config -> raw data files the workflow can check for (may be empty).
        data_splits: config -> the prepared splits.
        teacher_splits: config -> the splits the teacher artifact holds.
        arrays: file name of the per-example arrays of an evaluation.
        tables: summary tables ``name -> formats`` written by the aggregate stage.
        figures: figures the figures stage draws.
        published: ``(table -> caption, figures, README marker, docs file)`` of the publish stage.
        curves: students record a learning curve (``curve.csv``, ``students.curve_every``).
        shared_prediction: the teacher artifact and the evaluation split their work over the
            ranks of a data-parallel job (:mod:`pipeline.distributed`); otherwise rank 0 does
            it alone and the other ranks wait.
    """

    name: str
    schema: str
    sweeps_classes: bool
    raw_inputs: Callable[[dict], list[str]]
    data_splits: Callable[[dict], list[str]]
    teacher_splits: Callable[[dict], list[str]]
    arrays: str
    tables: dict[str, tuple[str, ...]]
    figures: tuple[str, ...]
    published: tuple[dict[str, str], tuple[str, ...], str, str] = field(repr=False)
    curves: bool = False
    shared_prediction: bool = False


TASKS: dict[str, TaskSpec] = {
    "image": TaskSpec(
        name="image",
        schema="config.schema.yaml",
        sweeps_classes=False,
        raw_inputs=lambda config: [],
        data_splits=_image_splits,
        teacher_splits=_image_splits,
        arrays="per_example.safetensors",
        shared_prediction=True,
        tables={
            name: ("csv", "md", "tex")
            for name in ("main", "prr", "ood", "shift", "shift_sets", "diversity")
        },
        figures=(
            "rejection_curves",
            "ood_histograms",
            "ood_examples",
            "reliability",
            "shift",
            "training_curves",
            "knowledge_scatter",
            "gradient_analysis",
        ),
        published=(
            {
                "main": "Test set (in-distribution): accuracy, NLL, Brier score, ECE.",
                "ood": "OOD detection ROC-AUC per uncertainty measure (OOD positive): "
                "Fashion-MNIST test vs MNIST digits, vs the test images with inverted intensities "
                "and vs the severity-5 corrupted test images (shift s5).",
                "diversity": "Ensemble diversity per set: the members' mean pairwise "
                "disagreement (share of images on which two members' top classes differ) and "
                "the mean RMI (knowledge uncertainty) of the ensemble and of each Dirichlet "
                "student; shift sN: the corrupted test images at severity N.",
                "prr": "Misclassification detection: prediction rejection ratio per measure "
                "(1 = oracle, 0 = random).",
                "shift": "Accuracy and ECE per corruption severity (s1..s5), mean over "
                "corruption types.",
            },
            (
                "ood_histograms",
                "ood_examples",
                "rejection_curves",
                "shift",
                "gradient_analysis",
            ),
            "results",
            "results.md",
        ),
    ),
    "text": TaskSpec(
        name="text",
        schema="text.schema.yaml",
        sweeps_classes=True,
        raw_inputs=_text_raw,
        data_splits=_text_splits,
        # the train split holds the members' features (pipeline.tasks.text.teacher)
        teacher_splits=lambda config: [s for s in _text_splits(config) if s != "val"],
        arrays="per_sequence.safetensors",
        tables={
            "sweep": ("csv",),
            **{
                name: ("csv", "md")
                for name in ("convergence", "main", "prr", "ood", "ood_main", "speed")
            },
        },
        figures=("class_sweep", "learning_curves", "token_gradients"),
        published=(
            {
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
                "speed": "Training throughput (target tokens/s of the steps, validation excluded, "
                "one thread) and slowdown against cross-entropy training of the same model (the "
                "members); the first steps include torch.compile of the fused losses.",
            },
            ("class_sweep", "learning_curves", "token_gradients"),
            "text-results",
            "text_results.md",
        ),
        curves=True,
    ),
}


def spec(name: str) -> TaskSpec:
    """The :class:`TaskSpec` of task ``name``; a ``ValueError`` naming the choices otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    return TASKS[name]


def load(name: str) -> ModuleType:
    """The implementation of task ``name`` (``pipeline.tasks.<name>``)."""
    return importlib.import_module(f"pipeline.tasks.{spec(name).name}")
