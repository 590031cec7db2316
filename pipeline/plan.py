"""What a (checked) config asks the workflow to build: the run's layout, its systems, the config
slice of every job and how each job is started. The rule files (``workflow/rules/*.smk``) read
one :class:`Plan`; everything here is plain Python, torch-free and tested
(``tests/workflow/test_plan.py``), where it was untestable inside the rule files.

A task that sweeps the number of classes K (``TaskSpec.sweeps_classes``: ``vocab_sizes``) runs
one sub-run per K under ``<results>/V<K>/``; otherwise the run is ``<results>`` itself.
"""

from __future__ import annotations

import itertools
import json

from pipeline import config as checks
from pipeline import methods
from pipeline.figure_registry import OPTIONS, input_kinds
from pipeline.tasks import TaskSpec

__all__ = ["Plan", "as_json"]


def as_json(obj) -> str:
    """Deterministic JSON for params (sorted keys): params change exactly when config does."""
    return json.dumps(obj, sort_keys=True)


class Plan:
    """The run ``config`` (validated by the schema, checked by :func:`pipeline.config.check`)
    of the task ``spec``.

    Attributes:
        R: the results root; ``RUN`` the sub-run's root as a pattern (``<R>/V{vocab}`` in a
            sweep, else ``R``).
        member_seeds, student_seeds, groups (the method groups), systems (``member-<s>``,
            ``ensemble``, ``<group>-seed<s>``).
        ks: the sweep's K (empty without a sweep); group_vocabs: group -> the K it runs at.
        data_splits, teacher_splits: the task's splits for this config.
        lr_search, lr_vocab, lr_seed, lr_rates, lr_run: the learning-rate search, if any.
        token_vocabs, token_groups: the real-data gradient diagnostic's K (a job each) and
            K -> the groups it reads there.
    """

    def __init__(self, config: dict, spec: TaskSpec):
        self.config, self.spec = config, spec
        self.R = config["results"]
        self.threads = int(config["threads"])
        self.device = config["device"]
        res = config.get("resources", {})
        self.mem_mb = int(res.get("mem_mb", 4000))
        self.runtime = int(res.get("runtime", 60))
        self.gpu = int(res.get("gpu", 0))  # per node
        self.processes = int(res.get("processes", 1))  # data-parallel ranks per node
        self.nodes = int(res.get("nodes", 1))
        self.world = self.processes * self.nodes
        self.member_seeds = [int(s) for s in config["ensemble"]["seeds"]]
        self.student_seeds = [int(s) for s in config["students"]["seeds"]]
        self.groups = list(config["students"]["methods"])
        self.systems = (
            [f"member-{s}" for s in self.member_seeds]
            + ["ensemble"]
            + [f"{m}-seed{s}" for m in self.groups for s in self.student_seeds]
        )
        self.sweep = spec.sweeps_classes
        self.ks = checks.sweep_sizes(config) if self.sweep else []
        self.RUN = f"{self.R}/V{{vocab}}" if self.sweep else self.R
        self.data_splits = spec.data_splits(config)
        self.teacher_splits = spec.teacher_splits(config)
        self.group_vocabs = checks.group_vocabs(config)
        self.lr_search = config.get("lr_search")
        lr = self.lr_search or {}
        self.lr_vocab = int(lr["vocab"]) if lr else None
        self.lr_seed = int(lr["seed"]) if lr else None  # the schema's default fills it
        self.lr_rates = [format(float(r), "g") for r in lr.get("lrs", [])]
        self.lr_run = f"{self.R}/V{self.lr_vocab}" if lr else None
        self.token_vocabs = checks.token_vocabs(config)
        self.token_groups = {v: checks.token_groups(config, v) for v in self.token_vocabs}
        # the students run the members themselves (the image task's teacher.mode: online)
        self.online_teacher = spec.cached_teacher and spec.teacher_mode(config) == "online"
        # the students learn on the ensemble's own outputs (students.targets: ensemble)
        self.ensemble_targets = (
            spec.ensemble_targets and config["students"].get("targets") == "ensemble"
        )
        shards = (config.get("ensemble_translations") or {}).get("shards", 1)
        self.translation_shards = list(range(int(shards))) if self.ensemble_targets else []

    # ------------------------------------------------------------------ which jobs
    def wanted(self, combo: dict) -> bool:
        """Whether a wildcard combination is part of the run: a student (method or system
        wildcard) only at the K its group runs at (``group_vocab_sizes``)."""
        group = combo.get("method") or methods.parse_system(combo.get("system", "ensemble"))[0]
        if "vocab" not in combo or group not in self.group_vocabs:  # no sweep; members, ensemble
            return True
        return int(combo["vocab"]) in self.group_vocabs[group]

    def runs(self, pattern: str, **wildcards) -> list[str]:
        """``pattern`` filled in over the sub-runs (outermost) and every combination of the
        other ``wildcards`` lists, in that order, without the students a group does not run at a
        K (snakemake's ``expand`` over the wanted combinations)."""
        if self.sweep:
            wildcards = {"vocab": self.ks, **wildcards}
        if not wildcards:
            return [pattern]
        keys = list(wildcards)
        combos = [
            dict(zip(keys, c, strict=True))
            for c in itertools.product(*(wildcards[k] for k in keys))
        ]
        return [pattern.format(**c) for c in combos if self.wanted(c)]

    # ------------------------------------------------------------------ config slices
    def member_config(self, seed) -> dict:
        """The ensemble config slice of one member: shared settings + that seed's overrides."""
        return checks.member_settings(self.config, seed)

    def teacher_config(self) -> dict:
        """The teacher artifact's settings (``teacher``, without the job's ``threads``). A task
        whose students read a cached teacher stores the train members' log-probs when a method
        group re-tempers them (EnD2 with a temperature schedule or smoothing)."""
        t = dict(self.config.get("teacher", {}))
        t.pop("threads", None)  # a job setting (the rule's threads), not the artifact's
        t.pop("allow_view_mismatch", None)  # a check's switch: the artifact is the same
        t.pop("mode", None)  # set below where it changes the artifact
        if self.online_teacher:
            t["mode"] = "online"  # the students run the members: no train split is cached
            t.pop("store_train_members", None)
        elif self.spec.cached_teacher:
            needed = any(
                methods.needs_members(*methods.variant(g, o))
                for g, o in self.config["students"]["methods"].items()
            )
            t["store_train_members"] = bool(t.get("store_train_members", False)) or needed
        return t

    def student_config(self, group: str, vocab=None) -> dict:
        """The students config slice of one method group at sub-run K = ``vocab``: the shared
        settings, that K's budget (``vocab_overrides``), its registered ``method``, its
        ``options``, and ``group`` where it is a variant (:func:`pipeline.methods.variant`)."""
        cfg = checks.student_settings(self.config, vocab)
        cfg["method"], cfg["options"] = methods.variant(
            group, self.config["students"]["methods"][group]
        )
        if group != cfg["method"]:
            cfg["group"] = group
        if self.online_teacher:
            cfg["teacher_mode"] = "online"  # the members run on the student's own batch
        if self.ensemble_targets and vocab is not None:
            cfg["translations"] = self.translations(f"{self.R}/V{vocab}")
        return cfg

    def lr_trial_config(self, group: str, lr) -> dict:
        """A trial's config: the group's students slice (without ``vocab_overrides``: the
        trials' budget is ``lr_search.overrides``), ``lr_search.overrides``, the trial's rate."""
        over = self.lr_search.get("overrides", {})
        cfg = {**self.student_config(group), **over, "lr": float(lr)}
        if self.ensemble_targets:
            cfg["translations"] = self.translations(self.lr_run)
        return cfg

    def translations(self, run: str | None = None) -> str:
        """The folder of the ensemble's translations of the train sources in a sub-run."""
        return f"{run or self.RUN}/ensemble_translations"

    def translation_config(self) -> dict:
        """How the ensemble translates the train sources: the teacher's decoding settings."""
        t = self.config.get("teacher", {})
        return {k: t[k] for k in ("beam", "alpha", "batch") if k in t}

    def student_data_inputs(self, run: str | None = None) -> dict[str, str]:
        """A student's training targets beyond the prepared data: the ensemble's translations
        where the students learn on them, else none."""
        if not self.ensemble_targets:
            return {}
        return {"translations": f"{self.translations(run)}/train.safetensors"}

    def translated_pairs(self, vocab) -> list[str]:
        """The ``train_pairs`` of every job that reads the translations at V = ``vocab`` (the
        students there and, at the search's V, the learning-rate trials; ``all`` for every
        pair): the decoded rows cover each of their subsets."""
        sizes = [checks.student_settings(self.config, vocab).get("train_pairs")]
        if self.lr_search and int(vocab) == self.lr_vocab:  # the trials' budget: lr_trial_config
            trials = {**checks.student_settings(self.config), **self.lr_search.get("overrides", {})}
            sizes.append(trials.get("train_pairs"))
        return ["all" if p is None else str(int(p)) for p in sizes]

    # ------------------------------------------------------------------ files
    def data_files(self) -> list[str]:
        return [f"{self.R}/data/{split}.safetensors" for split in self.data_splits]

    def teacher_files(self, run: str | None = None) -> list[str]:
        return [f"{run or self.RUN}/teacher/{s}.safetensors" for s in self.teacher_splits]

    def student_teacher_inputs(self, run: str | None = None) -> dict[str, object]:
        """A student's inputs from the teacher artifact: its manifest and splits where the task's
        students read it (``TaskSpec.students_read_teacher``), else none (a change of the
        artifact then retrains no student)."""
        if not self.spec.students_read_teacher:
            return {}
        return {
            "teacher": f"{run or self.RUN}/teacher/manifest.json",
            "cache": self.teacher_files(run),
        }

    def member_files(self, run: str | None = None) -> list[str]:
        return [f"{run or self.RUN}/members/seed{s}/model.safetensors" for s in self.member_seeds]

    def system_model(self, system: str) -> list[str]:
        """The student weights (pattern) a system needs; members and the ensemble read the
        teacher only."""
        group, seed = methods.parse_system(system)
        if group in ("member", "ensemble"):
            return []
        return [f"{self.RUN}/students/{group}/seed{seed}/model.safetensors"]

    # ------------------------------------------------------------------ how a job runs
    def data_parallel(self, parallel: bool = True) -> bool:
        """Whether a job whose stage can run as several ranks (``parallel``) does here."""
        return parallel and self.world > 1

    def launch(self, parallel: bool = True) -> str:
        """How a training/caching/evaluation job starts its stage module: ``python -m`` for one
        process, else through :mod:`pipeline.launch` (torchrun on one node, srun under SLURM)."""
        if not self.data_parallel(parallel):
            return "python -m"
        return f"python -m pipeline.launch --processes {self.processes} --nodes {self.nodes} --"

    def ranks_here(self, parallel: bool = True) -> int:
        return self.processes if self.data_parallel(parallel) else 1

    def job_threads(self, parallel: bool = True, per_process: int | None = None) -> int:
        """Cores a job takes on a node: ``per_process`` (default ``threads``) threads for each
        of its processes."""
        per = self.threads if per_process is None else per_process
        return per * self.ranks_here(parallel)

    def job_resources(self, parallel: bool = True) -> dict:
        """Resources of a training/caching/evaluation job. A data-parallel one asks SLURM for
        ``processes`` tasks per node on ``nodes`` nodes (the plugin's MPI-style job: the stage
        is started by srun inside it) with ``threads`` CPUs each; gpu is the job's total."""
        res = {"mem_mb": self.mem_mb, "runtime": self.runtime, "gpu": self.gpu * self.nodes}
        if self.data_parallel(parallel):
            res.update(
                mpi="srun",
                tasks_per_node=self.processes,
                nodes=self.nodes,
                cpus_per_task=self.threads,
            )
        return res

    # ------------------------------------------------------------------ analyses and figures
    def figure_options(self) -> str:
        """``--<option> <value>`` for every option of the task's figures the config sets."""
        wanted = dict.fromkeys(o for f in self.spec.figures for o in f.options)
        opts = []
        for name in wanted:
            option = OPTIONS[name]
            value = (self.config.get(option.section) or {}).get(option.key)
            if value is not None:
                opts.append(f"--{name.replace('_', '-')} {option.type(value)}")
        return " ".join(opts)

    def figure_kinds(self) -> list[str]:
        """The figure input kinds this task's figures read."""
        return input_kinds(self.spec.figures)

    def gradient_args(self) -> str:
        """The configured settings of the synthetic analysis (the stage's defaults for the
        rest)."""
        ga = self.config.get("gradient_analysis", {})
        args = [f"--ks {' '.join(str(k) for k in ga['ks'])}"] if "ks" in ga else []
        args += [f"--{k.replace('_', '-')} {int(ga[k])}" for k in ("batch", "profile_k") if k in ga]
        return " ".join(args)

    def token_args(self) -> str:
        """The configured settings of the real-data diagnostic (the stage's default else)."""
        sentences = self.config.get("gradient_analysis", {}).get("token_sentences")
        return f"--sentences {int(sentences)}" if sentences is not None else ""
