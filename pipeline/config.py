"""Config checks the JSON schema cannot express, run by the workflow before any job starts.

The schema (``workflow/schemas/``) checks types, ranges and unknown keys. :func:`check` adds the
rules between keys and the ones that need a clearer message than a schema error: a config that
passes both is one every job can run. Each failure is a :class:`ConfigError` naming the key, the
value given and what is allowed; the workflow runs the checks before any job. A task's own
checks are its spec's (``TaskSpec.check``), what it can do its spec's flags: nothing here knows a
task by name. Torch-free (imported while Snakemake builds the DAG).

Checks that need the prepared data (a vocabulary size beyond the corpus, an ImageFolder
``val_size`` beyond the number of images) run in the prepare stage, the first job of a run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pipeline import methods, tasks
from pipeline.defaults import setting
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


def sweep_sizes(config: dict) -> list[int]:
    """The class counts of the sweep (``vocab_sizes``; none for a task that does not sweep)."""
    return [int(v) for v in config.get("vocab_sizes") or []]


def member_settings(config: dict, seed) -> dict:
    """The training settings of one member (no ``seeds``, no ``overrides``): ``ensemble`` with
    that seed's ``ensemble.overrides`` on top. The workflow's member configs and
    :func:`training_slices` both use it."""
    ens = config["ensemble"]
    shared = {k: v for k, v in ens.items() if k not in ("seeds", "overrides")}
    return {**shared, **(ens.get("overrides") or {}).get(str(seed), {})}


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
    for seed in ens["seeds"]:
        own = (ens.get("overrides") or {}).get(str(seed))
        yield f"ensemble.overrides.{seed}" if own else "ensemble", member_settings(config, seed)
    yield "students", student_settings(config)
    for vocab in config.get("vocab_overrides") or {}:
        yield f"vocab_overrides.{vocab}", student_settings(config, vocab)


def check_training(prefix: str, cfg: dict) -> None:
    """Optimiser, schedule and loss settings of one training job."""
    opt = setting(cfg, "optimizer")
    wrong = SGD_KEYS if opt in ("adam", "adamw") else ADAM_KEYS
    for key in wrong:
        if key in cfg:
            raise ConfigError(
                f"{prefix}.{key}",
                cfg[key],
                f"{key} does not apply to optimizer {opt!r} (betas: adam, adamw; momentum, "
                "nesterov: sgd); remove it",
            )
    if opt == "sgd" and setting(cfg, "nesterov") and float(setting(cfg, "momentum")) <= 0:
        raise ConfigError(
            f"{prefix}.momentum",
            cfg.get("momentum"),
            "Nesterov SGD needs momentum > 0 (or set nesterov: false)",
        )
    for pattern in setting(cfg, "no_weight_decay"):
        try:
            re.compile(pattern)
        except re.error as err:
            raise ConfigError(
                f"{prefix}.no_weight_decay", pattern, f"a regular expression ({err})"
            ) from None
    epochs = int(cfg["epochs"])
    for m in setting(cfg, "milestones"):
        if not 1 <= int(m) < epochs:
            raise ConfigError(
                f"{prefix}.milestones", cfg["milestones"], f"epochs between 1 and {epochs - 1}"
            )
    if setting(cfg, "milestones") and setting(cfg, "schedule") != "multistep":
        raise ConfigError(
            f"{prefix}.milestones", cfg["milestones"], "only with schedule: multistep"
        )
    if float(setting(cfg, "warmup_epochs")) >= epochs:
        raise ConfigError(
            f"{prefix}.warmup_epochs", cfg["warmup_epochs"], f"fewer than epochs ({epochs})"
        )
    if not 0 <= float(setting(cfg, "label_smoothing")) < 1:
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


def check_methods(config: dict, spec: tasks.TaskSpec) -> None:
    """Every method group resolves to a registered method with its options; the task can do
    what the students ask of it (a learning curve, an output bias from the class marginal); an
    ensemble of one member teaches no method that needs the ensemble's diversity."""
    resolved = {}
    for group, options in config["students"]["methods"].items():
        try:
            resolved[group] = methods.variant(group, options or {})
        except (KeyError, ValueError) as err:
            raise ConfigError(f"students.methods.{group}", options, str(err)) from err
        init_bias = resolved[group][1].get("init_bias")
        spec.check_students(f"students.methods.{group}", {}, init_bias)
    for prefix, cfg in training_slices(config):
        spec.check_students(prefix, cfg)
    seeds = config["ensemble"]["seeds"]
    needing = [g for g, (name, _) in resolved.items() if methods.get(name).needs_ensemble]
    if len(seeds) < 2 and needing:
        raise ConfigError(
            "ensemble.seeds",
            seeds,
            f"at least 2 members: {needing} learn from the ensemble's diversity (with one member "
            "its RMI is 0 and a Dirichlet fitted to one sample is degenerate); add seeds, or "
            "keep only methods that need none (end)",
        )


def group_vocabs(config: dict) -> dict[str, list[int]]:
    """group -> the V it runs at (``group_vocab_sizes``; every V of the sweep otherwise)."""
    ks = sweep_sizes(config)
    given = config.get("group_vocab_sizes") or {}
    return {g: [int(v) for v in given.get(g, ks)] for g in config["students"]["methods"]}


def token_vocabs(config: dict) -> list[int]:
    """The V's of the real-data gradient diagnostic (one job each): ``gradient_analysis.
    token_vocab`` (one size or a list of sizes), else the learning-rate search's, else the
    largest of the sweep (none without a sweep)."""
    ks = sweep_sizes(config)
    given = (config.get("gradient_analysis") or {}).get("token_vocab")
    if given is not None:
        return [int(v) for v in given] if isinstance(given, list) else [int(given)]
    lr = config.get("lr_search")
    return [int(lr["vocab"])] if lr else ([max(ks)] if ks else [])


def token_groups(config: dict, vocab: int) -> list[str]:
    """The method groups whose students the real-data diagnostic reads at V = ``vocab`` (those
    run there)."""
    return [g for g, vocabs in group_vocabs(config).items() if vocab in vocabs]


def check_sweep(config: dict, spec: tasks.TaskSpec) -> None:
    """The keys of a class-count sweep: ``lr_search`` (its V one of ``vocab_sizes``, distinct
    rates), ``group_vocab_sizes`` (groups of ``students.methods`` at sizes of the sweep) and the
    real-data diagnostic's V (one of the sweep, with a group running there)."""
    ks = sweep_sizes(config)
    lr = config.get("lr_search")
    if lr is not None:
        if not spec.sweeps_classes:
            raise ConfigError(
                "lr_search", lr, f"only a task that sweeps vocab_sizes (not task {spec.name})"
            )
        if int(lr["vocab"]) not in ks:
            raise ConfigError("lr_search.vocab", lr["vocab"], f"one of vocab_sizes {ks}")
        rates = [format(float(r), "g") for r in lr["lrs"]]
        if len(set(rates)) != len(rates):
            raise ConfigError("lr_search.lrs", lr["lrs"], "distinct rates")
        check_training("lr_search", {**config["students"], **lr.get("overrides", {})})
    groups = list(config["students"]["methods"])
    for group, vocabs in (config.get("group_vocab_sizes") or {}).items():
        if group not in groups:
            raise ConfigError(
                f"group_vocab_sizes.{group}", vocabs, f"a method group of students.methods {groups}"
            )
        if not set(map(int, vocabs)) <= set(ks):
            raise ConfigError(f"group_vocab_sizes.{group}", vocabs, f"a subset of vocab_sizes {ks}")
    given = (config.get("gradient_analysis") or {}).get("token_vocab")
    vocabs = token_vocabs(config)
    if given is not None and not set(vocabs) <= set(ks):
        raise ConfigError("gradient_analysis.token_vocab", given, f"sizes of vocab_sizes {ks}")
    if len(set(vocabs)) != len(vocabs):
        raise ConfigError("gradient_analysis.token_vocab", given, "distinct sizes")
    for vocab in vocabs if spec.gradient_diagnostic else []:
        if not token_groups(config, vocab):
            raise ConfigError(
                "gradient_analysis.token_vocab",
                vocab,
                "a V at which a method group runs (group_vocab_sizes): the diagnostic reads its "
                "students",
            )


def check(config: dict, task: str) -> None:
    """Everything the schema does not say; raises :class:`ConfigError` on the first problem."""
    spec = tasks.spec(task)
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
    check_methods(config, spec)
    check_sweep(config, spec)
    spec.check(config)
