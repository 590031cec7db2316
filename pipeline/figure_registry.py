"""The figure registry's vocabulary (torch- and matplotlib-free: the workflow reads it while it
builds the DAG). A task's spec lists its figures as :class:`Figure` entries (name -> inputs ->
function); from them

* the workflow gives rule ``figures`` exactly the files those inputs name
  (``workflow/rules/figures.smk``) and the options the config sets;
* the stage ``figures`` builds its command line (one ``--<input>`` flag per input kind, one per
  option) and calls each function as ``fn(out, **inputs, **options)``.

A new figure is one function in ``pipeline/tasks/<task>/figures.py`` (keyword parameters named
after its inputs and options), one :class:`Figure` in the task's spec, and its caption
``workflow/report/<name>.rst``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["INPUTS", "OPTIONS", "Figure", "FigureInput", "FigureOption", "input_kinds"]


@dataclass(frozen=True)
class FigureInput:
    """A kind of file a figure reads: several files (``many``) or one."""

    many: bool
    help: str


INPUTS: dict[str, FigureInput] = {
    "per_example": FigureInput(True, "every system's per-example arrays (eval/<system>/)"),
    "tidy": FigureInput(False, "tables/metrics_tidy.csv"),
    "data_manifest": FigureInput(False, "data/manifest.json (the OOD images)"),
    "histories": FigureInput(True, "the students' history.csv"),
    "shares": FigureInput(False, "gradient_analysis/head_share.csv"),
    "profile": FigureInput(False, "gradient_analysis/rank_profile.csv"),
    "sweep": FigureInput(False, "tables/sweep.csv"),
    "curves": FigureInput(True, "the students' curve.csv"),
    "token_profile": FigureInput(True, "gradient_analysis/V<k>/token_profile.csv, one per V"),
    "token_gate": FigureInput(True, "gradient_analysis/V<k>/token_gate.csv, one per V"),
}
"""Every input kind a figure may read. The workflow knows each kind's files in a run."""


@dataclass(frozen=True)
class FigureOption:
    """A setting a figure takes from the config: ``config[section][key]``, passed only when the
    config sets it (the figure function's default otherwise)."""

    section: str
    key: str
    type: type
    help: str


OPTIONS: dict[str, FigureOption] = {
    "ece_bins": FigureOption("evaluation", "ece_bins", int, "ECE and reliability bins"),
    "ood_set": FigureOption("figure", "ood_set", str, "the OOD set a sweep figure draws"),
    "measure": FigureOption("figure", "measure", str, "the OOD score a sweep figure draws"),
    "headline": FigureOption(
        "figure", "headline", str, "comma-separated groups of the sweep figure's headline panel"
    ),
}


@dataclass(frozen=True)
class Figure:
    """One figure of a task.

    Attributes:
        name: the file stem (``figures/<name>.png``, ``.pdf``) and its caption's
            (``workflow/report/<name>.rst``).
        function: the function of the task's figure module (``impl.figure_module()``) that
            draws it.
        inputs: the kinds of :data:`INPUTS` it reads, passed as keywords of the same names.
        options: the settings of :data:`OPTIONS` it takes, passed as keywords when configured.
    """

    name: str
    function: str
    inputs: tuple[str, ...]
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [k for k in self.inputs if k not in INPUTS]
        unknown += [k for k in self.options if k not in OPTIONS]
        if unknown:
            raise ValueError(f"figure {self.name!r}: unknown inputs or options {unknown}")


def input_kinds(figures) -> list[str]:
    """The input kinds the ``figures`` read, each once, in the order they first appear."""
    return list(dict.fromkeys(k for f in figures for k in f.inputs))
