"""Tasks: what differs between an image classifier and a language model, behind one interface.

A task is a package ``pipeline/tasks/<name>/`` with

* ``spec.py``: its :class:`TaskSpec` as ``SPEC`` (torch-free: the workflow reads it while it
  builds the DAG). :data:`TASKS` discovers every package that has one; adding a task edits no
  shared module;
* ``__init__.py``: the functions of the :class:`Task` protocol (and of :class:`Diagnostic` and
  :class:`EnsembleTargets` where its spec declares ``gradient_diagnostic``, ``ensemble_targets``;
  :data:`PROTOCOLS`), each importing its implementation inside its body
  (:mod:`pipeline.imports` follows those imports per stage, so an edit reruns only the stages
  that call it).

The stages (``pipeline.stages``) are written once against :class:`Task` and know a task only
through it and its spec: what a task can do beyond the protocol is a named field of its spec
(``curves``, ``log_marginal``, ``gradient_diagnostic``, ...), never probed.

This module imports neither torch nor matplotlib; :func:`load` imports a task's
implementation when a stage runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch

    from pipeline.engine import TrainingSet
    from pipeline.figure_registry import Figure
    from pipeline.maths.stats import TeacherStats
    from pipeline.tables import Table

__all__ = [
    "DEFAULT_TASK",
    "INTERFACE",
    "OPTIONAL",
    "PROTOCOLS",
    "EnsembleTargets",
    "TASKS",
    "Diagnostic",
    "Published",
    "Task",
    "TaskSpec",
    "TeacherSource",
    "load",
    "spec",
]


@runtime_checkable
class TeacherSource(Protocol):
    """What a student learns from (``Task.student_teacher``).

    Attributes:
        member_sha256: checksum of the members it was built from (kept in the student's metadata;
            evaluation checks it against the teacher artifact).

    ``curve`` is called only where the task's spec declares ``curves``, ``log_marginal`` only
    where it declares ``log_marginal``; a teacher without the capability need not define them.
    """

    member_sha256: str

    def stats(
        self, idx: torch.Tensor, progress: float, x: torch.Tensor | None = None
    ) -> TeacherStats:
        """The teacher statistics (rows in the order of the student's logit rows) of training
        examples ``idx [b]`` at ``progress`` (epochs done, a float: EnD2's temperature clock);
        ``x``: the student's input of this step, exactly as the student saw it (an online
        teacher runs the members on it; a cached one reads its rows ``idx``)."""

    def validate(self, model: torch.nn.Module, epoch: int) -> dict[str, float]:
        """Validation metrics of the student after ``epoch`` (``val_*`` keys)."""

    def curve(self, model: torch.nn.Module) -> dict[str, float]:
        """One learning-curve point (``TaskSpec.curves``)."""

    def log_marginal(self) -> torch.Tensor:
        """``[K]`` ln of the ensemble's mean prediction over training rows
        (``TaskSpec.log_marginal``: ``init_bias: log_marginal``)."""


class Task(Protocol):
    """The functions every task package provides (``pipeline/tasks/<name>/__init__.py``).
    ``num_classes`` is K where the task sweeps it (``TaskSpec.sweeps_classes``), else ``None``."""

    def prepare(self, cfg: dict, out: str | Path) -> dict:
        """Raw data -> prepared splits + ``manifest.json`` in ``out``; returns the manifest."""

    def describe(self, manifest: dict) -> str:
        """A summary of the prepared data for the log."""

    def training_set(
        self, data_dir: str | Path, cfg: dict, num_classes: int | None, device: torch.device
    ) -> TrainingSet:
        """The training examples as :func:`pipeline.engine.fit` reads them, their targets, the
        model's metadata and the validation data."""

    def build_model(self, model_cfg: dict, info: dict) -> torch.nn.Module:
        """A fresh model for ``cfg["model"]`` (logits ``[rows, K]``); ``info``:
        ``TrainingSet.info``."""

    def load_model(self, path: str | Path) -> tuple[torch.nn.Module, dict]:
        """A trained member or student and its metadata."""

    def validate(
        self, model: torch.nn.Module, ts: TrainingSet, device: torch.device
    ) -> dict[str, float]:
        """A member's validation metrics (``val_acc``, ``val_nll``)."""

    def build_teacher(
        self,
        data_dir: str | Path,
        member_files: list[Path],
        seeds: list[int],
        out: str | Path,
        cfg: dict,
        num_classes: int | None,
        log: Callable[[str], None] = print,
    ) -> tuple[dict, int]:
        """The run's teacher artifact in ``out``: ``(manifest, samples processed)``."""

    def student_teacher(
        self,
        teacher_dir: str | Path,
        member_files: list[Path],
        ts: TrainingSet,
        method: str,
        options: dict,
        device: torch.device,
        cfg: dict,
    ) -> TeacherSource:
        """What a student of ``method`` (with ``options``) learns from; ``cfg``: the student's
        config slice (its ``teacher`` mode, ``amp``)."""

    def evaluate_system(
        self,
        group: str,
        seed: int | None,
        data_dir: str | Path,
        teacher_dir: str | Path,
        model: torch.nn.Module | None,
        meta: dict | None,
        cfg: dict,
        num_classes: int | None,
        device: torch.device,
    ) -> tuple[list[dict], dict[str, Any], dict[str, Any]]:
        """One system's tidy metric rows, per-example arrays and key columns (``vocab``...)."""

    def tables(self, tidy: pd.DataFrame, histories: Any = None) -> dict[str, Table]:
        """The run's summary tables from the tidy metrics (and the training histories)."""

    def figure_module(self) -> ModuleType:
        """The module of the functions the spec's figure registry names."""


class Diagnostic(Protocol):
    """The real-data gradient diagnostic, where ``TaskSpec.gradient_diagnostic``."""

    def gradient_diagnostic(
        self,
        data_dir: str | Path,
        vocab: int,
        teacher_dir: str | Path,
        member_files: list[Path],
        students: dict[str, Path],
        sentences: int,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(profile, gate)``: mean ``|dL/dz_c|`` per rank of ``pi_bar_c`` (columns ``rank``,
        ``mean_prob``, one per group) and one gate row per group (``pipeline.stages.
        token_gradients``)."""


class EnsembleTargets(Protocol):
    """The students' targets from the ensemble's own outputs for the train inputs, where
    ``TaskSpec.ensemble_targets`` (``pipeline.stages.translate_train``)."""

    def translated_rows(self, data_dir: str | Path, vocab: int, train_pairs: list) -> np.ndarray:
        """``[m]`` the train rows the ensemble's outputs are needed for: the union of the
        readers' subsets (their ``train_pairs``, ``None`` = all)."""

    def translate_shard(
        self,
        data_dir: str | Path,
        member_files: list[Path],
        vocab: int,
        rows: np.ndarray,
        cfg: dict,
        device: torch.device,
        out: str | Path,
    ) -> None:
        """Write the ensemble's outputs for the train inputs ``rows`` to ``out``."""

    def merge_translations(
        self,
        shards: list[Path],
        rows: np.ndarray,
        data_dir: str | Path,
        member_files: list[Path],
        vocab: int,
        cfg: dict,
        out: str | Path,
    ) -> dict:
        """Merge the shards (exactly ``rows``) into the folder the students read; its
        manifest."""


INTERFACE = tuple(n for n in vars(Task) if not n.startswith("_"))
"""The functions every task package provides (:class:`Task`)."""
OPTIONAL = {
    "gradient_diagnostic": "gradient_diagnostic",
    "translated_rows": "ensemble_targets",
    "translate_shard": "ensemble_targets",
    "merge_translations": "ensemble_targets",
}
"""Functions a task provides exactly when its spec's flag of that name is true."""
PROTOCOLS = {"gradient_diagnostic": Diagnostic, "ensemble_targets": EnsembleTargets}
"""The protocol of each flag's functions."""


@dataclass(frozen=True)
class Published:
    """What the stage ``publish`` writes for a task.

    Attributes:
        tables: the published tables (``tables/<name>.md``) and their captions, in order; the
            first is the one the README shows.
        figures: the figures copied to ``docs/figures/``.
        marker: the README block ``<!-- <marker>:start -->`` ... ``<!-- <marker>:end -->``.
        doc: the page written, ``docs/<doc>``.
    """

    tables: Mapping[str, str]
    figures: tuple[str, ...]
    marker: str
    doc: str


def _no_checks(config: dict) -> None:
    """A task without config checks of its own."""


def _one_teacher(config: dict) -> None:
    """A task whose students' teacher runs one way (no ``teacher.mode``)."""


@dataclass(frozen=True)
class TaskSpec:
    """The facts about a task that the workflow and the stages need without importing it.

    Attributes:
        name: ``config["task"]`` and the package name.
        schema: the config schema (``workflow/schemas/<schema>``).
        sweeps_classes: one sub-run per number of classes K (``config["vocab_sizes"]``),
            laid out as ``<results>/V<K>/...``; otherwise K comes from the data. Only such a task
            has ``lr_search`` (its ``vocab`` is one of the K), ``vocab_overrides`` and
            ``group_vocab_sizes``.
        raw_inputs: config -> raw data files the workflow can check for (may be empty).
        data_splits: config -> the prepared splits.
        teacher_splits: config -> the splits the teacher artifact holds.
        arrays: file name of the per-example arrays of an evaluation.
        tables: summary tables ``name -> formats`` written by the aggregate stage.
        figures: the figure registry: what the figures stage draws, in order.
        palette_from: the figure input (a table with a ``group`` column) that lists the run's
            groups, so every figure of the run colours them alike.
        published: what the publish stage writes.
        check: config checks of the task's own (raise :class:`pipeline.errors.ConfigError`).
        prepare_keys: the config sections the prepared data is built from (``rule
            prepare_data``'s config slice).
        shared_prediction: the teacher artifact and the evaluation split their work over the
            ranks of a data-parallel job (:mod:`pipeline.distributed`); otherwise rank 0 does
            it alone and the other ranks wait.
        cached_teacher: the students read the teacher artifact's training statistics (rather
            than running the members): a method that re-tempers the members needs their
            log-probs stored in it (``teacher.store_train_members``).
        students_read_teacher: a student reads the teacher artifact (the image task's cached
            statistics, the token task's train features); otherwise it runs the members alone
            and a change of the artifact (the translation task's decoding) retrains none.
        curves: the teacher records a learning curve (``curve``; ``students.curve_every``,
            ``curve.csv``).
        log_marginal: the teacher gives the ensemble's log class-marginal (``log_marginal``;
            the student option ``init_bias: log_marginal``).
        gradient_diagnostic: the task runs the real-data gradient diagnostic
            (:class:`Diagnostic`; rule ``token_gradients``).
        ensemble_targets: the students may learn on the ensemble's own outputs for the train
            inputs instead of the references (``students.targets: ensemble``; the translation
            task: its beam-search translations, rules ``translate_shard`` and
            ``ensemble_translations``).
        teacher_mode: config -> how the students' teacher runs where the task offers a choice
            (the image task: ``online`` or ``cache``, handed to ``student_teacher`` as the
            students' ``teacher_mode``); ``None`` where it has one way.
    """

    name: str
    schema: str
    sweeps_classes: bool
    raw_inputs: Callable[[dict], list[str]]
    data_splits: Callable[[dict], list[str]]
    teacher_splits: Callable[[dict], list[str]]
    arrays: str
    tables: Mapping[str, tuple[str, ...]]
    figures: tuple[Figure, ...]
    palette_from: str
    published: Published = field(repr=False)
    check: Callable[[dict], None] = _no_checks
    prepare_keys: tuple[str, ...] = ("dataset", "ood")
    shared_prediction: bool = False
    cached_teacher: bool = False
    students_read_teacher: bool = True
    curves: bool = False
    log_marginal: bool = False
    gradient_diagnostic: bool = False
    ensemble_targets: bool = False
    teacher_mode: Callable[[dict], str | None] = _one_teacher

    def __post_init__(self) -> None:
        names = [f.name for f in self.figures]
        if len(set(names)) != len(names):
            raise ValueError(f"task {self.name!r}: a figure registered twice in {names}")
        if self.palette_from not in {k for f in self.figures for k in f.inputs}:
            raise ValueError(f"task {self.name!r}: palette_from is no input of its figures")
        if not set(self.published.figures) <= set(names):
            raise ValueError(f"task {self.name!r}: publishes a figure it does not draw")
        if not set(self.published.tables) <= set(self.tables):
            raise ValueError(f"task {self.name!r}: publishes a table it does not write")

    @property
    def figure_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.figures)

    def check_students(self, key: str, settings: dict, init_bias=None) -> None:
        """A :class:`ConfigError` naming ``key`` (the config slice of ``settings``) where the
        students ask for a capability the task lacks: a learning curve (``curve_every``), an
        output bias from the class marginal (``init_bias``)."""
        if settings.get("curve_every") and not self.curves:
            raise ConfigError(
                f"{key}.curve_every",
                settings["curve_every"],
                f"none: the {self.name} task's teacher records no learning curve",
            )
        if init_bias is not None and not self.log_marginal:
            raise ConfigError(
                f"{key}.init_bias",
                init_bias,
                f"null: the {self.name} task's teacher gives no class marginal",
            )


def _discover() -> dict[str, TaskSpec]:
    """Every task package with a ``spec`` module, by name."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.ispkg or importlib.util.find_spec(f"{__name__}.{info.name}.spec") is None:
            continue
        task_spec = importlib.import_module(f"{__name__}.{info.name}.spec").SPEC
        if task_spec.name != info.name:
            raise ValueError(f"pipeline/tasks/{info.name}/spec.py names its task {task_spec.name}")
        found[info.name] = task_spec
    return found


TASKS: dict[str, TaskSpec] = _discover()
"""Every task, by name: the packages under ``pipeline/tasks/`` with a ``spec`` module."""
DEFAULT_TASK = "image"
"""The task of a config without a ``task`` key (the default experiment's)."""


def spec(name: str) -> TaskSpec:
    """The :class:`TaskSpec` of task ``name``; a ``ValueError`` naming the choices otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    return TASKS[name]


def load(name: str) -> Task:
    """The implementation of task ``name`` (``pipeline.tasks.<name>``)."""
    return importlib.import_module(f"{__name__}.{spec(name).name}")
