"""Config checks the JSON schema cannot express, run by the workflow before any job starts.

The schema (``workflow/schemas/``) checks types, ranges and unknown keys. :func:`check` adds the
rules between keys and the ones that need a clearer message than a schema error: a config that
passes both is one every job can run. Each failure is a :class:`ConfigError` naming the key, the
value given and what is allowed. Torch-free (imported while Snakemake builds the DAG).

Checks that need the prepared data (a vocabulary size beyond the corpus, an ImageFolder
``val_size`` beyond the number of images) run in the prepare stage, the first job of a run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pipeline import methods
from pipeline.errors import ConfigError

RESULTS_PATTERN = re.compile(r"^[A-Za-z0-9_.+/=,@:~-]+$")
ADAM_KEYS = ("betas",)
SGD_KEYS = ("momentum", "nesterov")


def _string_keys(prefix: str, mapping: dict, what: str, source: str, allowed: list) -> None:
    """Every key of ``mapping`` is one of ``allowed`` (the config list ``source``) written as a
    string."""
    for key in mapping:
        if not isinstance(key, str):
            raise ConfigError(
                f"{prefix}.{key}",
                key,
                f"keys are {what}s written as strings (quote it: '{key}': ...)",
            )
        if key not in allowed:
            raise ConfigError(f"{prefix}.{key}", key, f"a {what} of {source} {allowed}")


def check_keys(config: dict) -> None:
    """What must hold before the schema is applied (the schema validator itself fails with a
    TypeError on non-string keys): ``ensemble.overrides`` is keyed by seeds of
    ``ensemble.seeds`` and ``vocab_overrides`` by sizes of ``vocab_sizes``, written as strings."""
    ens = config.get("ensemble") or {}
    seeds = [str(s) for s in ens.get("seeds", [])]
    _string_keys("ensemble.overrides", ens.get("overrides") or {}, "seed", "ensemble.seeds", seeds)
    vocabs = [str(v) for v in config.get("vocab_sizes") or []]
    overrides = config.get("vocab_overrides") or {}
    _string_keys("vocab_overrides", overrides, "size", "vocab_sizes", vocabs)


def student_settings(config: dict, vocab=None) -> dict:
    """The students' shared training settings (no ``seeds``, no ``methods``) at sub-run
    V = ``vocab``: ``students`` with that V's ``vocab_overrides`` budget on top (none for
    ``vocab=None``). The workflow's student configs and :func:`training_slices` both use it."""
    students = {k: v for k, v in config["students"].items() if k not in ("seeds", "methods")}
    return {**students, **(config.get("vocab_overrides") or {}).get(str(vocab), {})}


def training_slices(config: dict) -> Iterator[tuple[str, dict]]:
    """``(key prefix, training config)`` of every job that trains: each member (shared settings
    + its overrides), the students, and the students at each V of ``vocab_overrides``."""
    ens = config["ensemble"]
    shared = {k: v for k, v in ens.items() if k not in ("seeds", "overrides")}
    overrides = ens.get("overrides") or {}
    for seed in ens["seeds"]:
        own = overrides.get(str(seed), {})
        prefix = f"ensemble.overrides.{seed}" if own else "ensemble"
        yield prefix, {**shared, **own}
    yield "students", student_settings(config)
    for vocab in config.get("vocab_overrides") or {}:
        yield f"vocab_overrides.{vocab}", student_settings(config, vocab)


def check_training(prefix: str, cfg: dict) -> None:
    """Optimiser, schedule and loss settings of one training job."""
    opt = cfg.get("optimizer", "adamw")
    wrong = SGD_KEYS if opt in ("adam", "adamw") else ADAM_KEYS
    for key in wrong:
        if key in cfg:
            raise ConfigError(
                f"{prefix}.{key}",
                cfg[key],
                f"{key} does not apply to optimizer {opt!r} (betas: adam, adamw; momentum, "
                "nesterov: sgd); remove it",
            )
    if opt == "sgd" and cfg.get("nesterov", True) and float(cfg.get("momentum", 0.9)) <= 0:
        raise ConfigError(
            f"{prefix}.momentum",
            cfg.get("momentum"),
            "Nesterov SGD needs momentum > 0 (or set nesterov: false)",
        )
    epochs = int(cfg["epochs"])
    for m in cfg.get("milestones", []):
        if not 1 <= int(m) < epochs:
            raise ConfigError(
                f"{prefix}.milestones", cfg["milestones"], f"epochs between 1 and {epochs - 1}"
            )
    if cfg.get("milestones") and cfg.get("schedule", "cosine") != "multistep":
        raise ConfigError(
            f"{prefix}.milestones", cfg["milestones"], "only with schedule: multistep"
        )
    if float(cfg.get("warmup_epochs", 0)) >= epochs:
        raise ConfigError(
            f"{prefix}.warmup_epochs", cfg["warmup_epochs"], f"fewer than epochs ({epochs})"
        )
    if not 0 <= float(cfg.get("label_smoothing", 0.0)) < 1:
        raise ConfigError(
            f"{prefix}.label_smoothing", cfg["label_smoothing"], "0 <= label_smoothing < 1"
        )


def check_parallel(config: dict) -> None:
    """Data-parallel jobs (``resources.processes`` ranks per node on ``resources.nodes``
    nodes): one rank per GPU, at least one example per rank in every global batch, and the
    SLURM launch (``--ntasks-per-node`` > 1) for more than one node."""
    res = config.get("resources") or {}
    processes, nodes, gpu = (
        int(res.get(k, d)) for k, d in (("processes", 1), ("nodes", 1), ("gpu", 0))
    )
    if gpu and processes != gpu:
        raise ConfigError(
            "resources.processes",
            processes,
            f"one process per GPU: set it to resources.gpu ({gpu}, the GPUs per node)",
        )
    if nodes > 1 and processes < 2:
        raise ConfigError(
            "resources.processes",
            processes,
            "at least 2 per node when resources.nodes > 1 (the SLURM profile starts the ranks "
            "with --ntasks-per-node, which must be > 1)",
        )
    world = processes * nodes
    for prefix, cfg in training_slices(config):
        if int(cfg.get("batch_size", world)) < world:
            raise ConfigError(
                f"{prefix}.batch_size",
                cfg["batch_size"],
                f"at least the number of processes ({world}): batch_size is the global batch, "
                "split over the ranks",
            )


def check(config: dict, task: str) -> None:
    """Everything the schema does not say; raises :class:`ConfigError` on the first problem."""
    results = config.get("results")
    if not isinstance(results, str) or not RESULTS_PATTERN.match(results):
        raise ConfigError(
            "results",
            results,
            "a non-empty path of letters, digits and _ . + / = , @ : ~ - (no spaces or quotes: "
            "it is passed to shell commands)",
        )
    check_keys(config)
    for prefix, cfg in training_slices(config):
        check_training(prefix, cfg)
    check_parallel(config)
    for method, options in config["students"]["methods"].items():
        try:
            methods.variant(method, options or {})
        except (KeyError, ValueError) as err:
            raise ConfigError(f"students.methods.{method}", options, str(err)) from err
    ood = config.get("ood") or {}
    if ood.get("corruptions") and not ood.get("severities", [1]):
        raise ConfigError("ood.severities", [], "at least one severity in 1..5 with corruptions")
    ds = config.get("dataset") or {}
    lr = config.get("lr_search")
    if lr is not None:
        if task != "text":
            raise ConfigError("lr_search", lr, "only the token task (task: text) has it")
        if int(lr["vocab"]) not in [int(v) for v in config["vocab_sizes"]]:
            raise ConfigError(
                "lr_search.vocab", lr["vocab"], f"one of vocab_sizes {config['vocab_sizes']}"
            )
        rates = [format(float(r), "g") for r in lr["lrs"]]
        if len(set(rates)) != len(rates):
            raise ConfigError("lr_search.lrs", lr["lrs"], "distinct rates")
        check_training("lr_search", {**config["students"], **lr.get("overrides", {})})
    tv = (config.get("gradient_analysis") or {}).get("token_vocab")
    if tv is not None and int(tv) not in [int(v) for v in config.get("vocab_sizes", [])]:
        raise ConfigError(
            "gradient_analysis.token_vocab", tv, f"one of vocab_sizes {config.get('vocab_sizes')}"
        )
    if task == "text":
        if int(ds.get("val_mod", 8)) == int(ds.get("test_mod", 9)):
            raise ConfigError(
                "dataset.test_mod", ds.get("test_mod"), "a residue other than dataset.val_mod"
            )
