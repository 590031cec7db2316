# Config validation, the run's layout and target lists, helpers shared by the rule files.
# Nothing here imports torch or matplotlib: pipeline.tasks, pipeline.methods and pipeline.imports
# are light on purpose, so building the DAG stays fast.
import itertools
import json
import os
from pathlib import Path

from snakemake.utils import validate

from pipeline import tasks
from pipeline.config import check as check_config, check_keys, student_settings
from pipeline.imports import stage_closure
from pipeline.methods import needs_members, parse_system, variant
from pipeline.progress import record_for


TASK = config.get("task", "image")
SPEC = tasks.spec(TASK)
check_keys(config)  # before the schema: its validator fails on non-string keys
validate(config, schema=f"../schemas/{SPEC.schema}")
check_config(config, TASK)  # what the schema cannot say (pipeline.config)

R = config["results"]  # output root of this experiment
THREADS = int(config["threads"])
DEVICE = config["device"]
_RES = config.get("resources", {})
MEM_MB = int(_RES.get("mem_mb", 4000))
RUNTIME = int(_RES.get("runtime", 60))
GPU = int(_RES.get("gpu", 0))  # per node
PROCESSES = int(_RES.get("processes", 1))  # data-parallel ranks per node (pipeline.launch)
NODES = int(_RES.get("nodes", 1))
WORLD = PROCESSES * NODES
REPO = Path(workflow.basedir)

MEMBER_SEEDS = [int(s) for s in config["ensemble"]["seeds"]]
STUDENT_SEEDS = [int(s) for s in config["students"]["seeds"]]
METHODS = list(config["students"]["methods"])
SYSTEMS = (
    [f"member-{s}" for s in MEMBER_SEEDS]
    + ["ensemble"]
    + [f"{m}-seed{s}" for m in METHODS for s in STUDENT_SEEDS]
)

# A task that sweeps the number of classes K (the token task: V) runs one sub-run per K under
# {R}/V{K}/; otherwise the run is {R} itself. RUN is the sub-run's root as a pattern.
SWEEP = SPEC.sweeps_classes
KS = [int(v) for v in config["vocab_sizes"]] if SWEEP else []
RUN = f"{R}/V{{vocab}}" if SWEEP else R
if "figure" in config and config["figure"]["ood_set"] not in config["ood"]["sets"]:
    raise ValueError(
        f"figure.ood_set {config['figure']['ood_set']!r} is not one of ood.sets "
        f"{config['ood']['sets']}"
    )
DATA_SPLITS = SPEC.data_splits(config)
TEACHER_SPLITS = SPEC.teacher_splits(config)


def _data_parallel(parallel):
    """Whether a job whose stage can run as several ranks (`parallel`) does in this config."""
    return parallel and WORLD > 1


def launch(parallel=True):
    """How a training/caching/evaluation job starts its stage module: `python -m` for one
    process, else through pipeline.launch (torchrun on one node, srun in a SLURM allocation)."""
    if not _data_parallel(parallel):
        return "python -m"
    return f"python -m pipeline.launch --processes {PROCESSES} --nodes {NODES} --"


def _ranks_here(parallel):
    return PROCESSES if _data_parallel(parallel) else 1


def job_threads(parallel=True, per_process=THREADS):
    """Cores a job takes on a node: `per_process` threads for each of its processes."""
    return per_process * _ranks_here(parallel)


def per_process(parallel=True):
    """A params function: the threads each process of the job runs (`--threads`), its cores
    (as Snakemake grants them) over its processes on the node."""
    return lambda wildcards, threads: max(1, threads // _ranks_here(parallel))


def job_resources(parallel=True):
    """Resources of a training/caching/evaluation job. A data-parallel one asks SLURM for
    PROCESSES tasks per node on NODES nodes (the plugin's MPI-style job: the stage is started
    by srun inside it, pipeline.launch) with `threads` CPUs each; gpu is the job's total."""
    res = {"mem_mb": MEM_MB, "runtime": RUNTIME, "gpu": GPU * NODES}
    if _data_parallel(parallel):
        res.update(mpi="srun", tasks_per_node=PROCESSES, nodes=NODES, cpus_per_task=THREADS)
    return res


def code(stage):
    """The pipeline source files `python -m pipeline.stages.<stage>` runs for this task (its
    import closure, pipeline.imports): editing one reruns that stage's jobs (mtime trigger)."""
    return [os.path.relpath(p) for p in stage_closure(stage, TASK, REPO)]


def as_json(obj):
    """Deterministic JSON for params (sorted keys): params change exactly when config does."""
    return json.dumps(obj, sort_keys=True)


def _group_vocabs():
    """group -> the V it runs at (config key group_vocab_sizes; every V of the sweep otherwise)."""
    given = config.get("group_vocab_sizes") or {}
    for group, vocabs in given.items():
        if group not in METHODS:
            raise ValueError(
                f"group_vocab_sizes.{group}: not a method group of students.methods {METHODS}"
            )
        if not set(map(int, vocabs)) <= set(KS):
            raise ValueError(
                f"group_vocab_sizes.{group}: {vocabs} is not a subset of vocab_sizes {KS}"
            )
    return {g: [int(v) for v in given.get(g, KS)] for g in METHODS}


GROUP_VOCABS = _group_vocabs()


def _wanted(combo):
    """Whether a wildcard combination is part of the run: a student (method or system wildcard)
    only at the V its group runs at."""
    group = combo.get("method") or parse_system(combo.get("system", "ensemble"))[0]
    if "vocab" not in combo or group not in GROUP_VOCABS:  # no sweep; members, ensemble
        return True
    return combo["vocab"] in GROUP_VOCABS[group]


def runs(pattern, **wildcards):
    """`pattern` expanded over the sub-runs (and any other wildcard lists given), in the order of
    expand(), without the students a group does not run at a V (group_vocab_sizes)."""
    if SWEEP:
        wildcards = {"vocab": KS, **wildcards}  # sub-run outermost
    if not wildcards:
        return [pattern]
    keys = list(wildcards)
    combos = [dict(zip(keys, c)) for c in itertools.product(*(wildcards[k] for k in keys))]
    combos = [c for c in combos if _wanted(c)]
    return expand(pattern, zip, **{k: [c[k] for c in combos] for k in keys})


def fill(pattern):
    """A params function: `pattern` with the job's wildcards filled in."""
    return lambda wc: pattern.format(**dict(wc.items()))


def progress_record(log):
    """A params function: the progress record of the job whose log pattern is ``log``
    (pipeline.progress.record_for; pipeline.status reads it)."""
    return fill(str(record_for(log)))


def k_arg(wc):
    """The stage argument naming the sub-run's number of classes."""
    return f"--num-classes {wc.vocab}" if SWEEP else ""


def member_config(seed):
    """The ensemble config slice of one member: shared settings + that seed's overrides."""
    ens = config["ensemble"]
    cfg = {k: v for k, v in ens.items() if k not in ("seeds", "overrides")}
    cfg.update(ens.get("overrides", {}).get(str(seed), {}))
    return cfg


def teacher_config():
    t = dict(config.get("teacher", {}))
    t.pop("threads", None)  # a job setting (the rule's threads), not the artifact's
    # EnD2 with a temperature schedule or smoothing re-tempers members: needs their log-probs
    if SPEC.name == "image":
        needed = any(needs_members(*variant(g, o)) for g, o in config["students"]["methods"].items())
        t["store_train_members"] = bool(t.get("store_train_members", False)) or needed
    return t


def student_config(group, vocab=None):
    """The students config slice of one method group at sub-run V = ``vocab``: the shared
    settings, that V's budget (vocab_overrides, the same for every group), its registered
    ``method``, its ``options``, and ``group`` where it is a variant (pipeline.methods.variant)."""
    cfg = student_settings(config, vocab)
    cfg["method"], cfg["options"] = variant(group, config["students"]["methods"][group])
    if group != cfg["method"]:
        cfg["group"] = group
    return cfg


# The learning-rate search (workflow/rules/lr_search.smk), when the config has lr_search.
LR_SEARCH = config.get("lr_search")
LR_VOCAB = int(LR_SEARCH["vocab"]) if LR_SEARCH else None
LR_SEED = int(LR_SEARCH.get("seed", 0)) if LR_SEARCH else None
LR_RATES = [format(float(r), "g") for r in LR_SEARCH["lrs"]] if LR_SEARCH else []
LR_RUN = f"{R}/V{LR_VOCAB}" if LR_SEARCH else None


# The token task's real-data gradient diagnostic reads the students at this V.
_GA = config.get("gradient_analysis", {})
TOKEN_VOCAB = int(_GA.get("token_vocab", LR_VOCAB or (max(KS) if KS else 0)))


def lr_trial_config(group, lr):
    """A trial's config: the group's students slice (without vocab_overrides: the trials' budget
    is lr_search.overrides), lr_search.overrides, the trial's rate."""
    return {**student_config(group), **LR_SEARCH.get("overrides", {}), "lr": float(lr)}


def lr_choice_input(wc):
    """The `lr` input of the distill rule (the group's choice.json under lr_search), else none."""
    return [f"{R}/lr_search/{wc.method}/choice.json"] if LR_SEARCH else []


def lr_arg(wc, input):
    return f"--lr-from '{input.lr[0]}'" if LR_SEARCH else ""


def data_files():
    return [f"{R}/data/{split}.safetensors" for split in DATA_SPLITS]


def teacher_files():
    return [f"{RUN}/teacher/{split}.safetensors" for split in TEACHER_SPLITS]


def member_files():
    return [f"{RUN}/members/seed{s}/model.safetensors" for s in MEMBER_SEEDS]


def system_model(wc):
    """The student weights a system needs (members and the ensemble read the teacher only)."""
    if wc.system.startswith("member-") or wc.system == "ensemble":
        return []
    method, seed = wc.system.rsplit("-seed", 1)
    return [f"{RUN}/students/{method}/seed{seed}/model.safetensors".format(**dict(wc.items()))]


def resource_records():
    """Every job's resource record: the `res` outputs of the rules that write one, expanded
    (called by rules included after those rules)."""
    return (
        runs(rules.train_member.output.res, seed=MEMBER_SEEDS)
        + runs(rules.cache_teacher.output.res)
        + runs(rules.distill.output.res, method=METHODS, seed=STUDENT_SEEDS)
        + runs(rules.evaluate.output.res, system=SYSTEMS)
    )


def student_histories():
    """Every student's history.csv (the `history` output of rule distill, expanded)."""
    return runs(rules.distill.output.history, method=METHODS, seed=STUDENT_SEEDS)


def student_curves():
    """Every student's learning curve (the `curve` output of rule distill, expanded)."""
    return runs(rules.distill.output.curve, method=METHODS, seed=STUDENT_SEEDS)


def fig(name):
    return report(f"{R}/figures/{name}.png", caption=f"../report/{name}.rst", category="Figures")


def table(name):
    return report(f"{R}/tables/{name}.csv", caption="../report/tables.rst", category="Tables")


# ----------------------------------------------------------------- figures, gradient analysis
# The inputs each figure is drawn from (pipeline.stages.figures); a task draws SPEC.figures.
FIGURE_INPUTS = {
    "rejection_curves": ["per_example"],
    "ood_histograms": ["per_example"],
    "ood_examples": ["per_example", "data_manifest"],
    "reliability": ["per_example"],
    "shift": ["tidy"],
    "training_curves": ["histories"],
    "knowledge_scatter": ["per_example"],
    "gradient_analysis": ["shares", "profile"],
    "class_sweep": ["sweep", "shares"],
    "learning_curves": ["curves"],
    "token_gradients": ["token_profile", "token_gate"],
}


def figure_inputs():
    """Named inputs of the figures rule: only what this task's figures read, as explicit files."""
    files = {
        "per_example": runs(f"{RUN}/eval/{{system}}/{SPEC.arrays}", system=SYSTEMS),
        "tidy": f"{R}/tables/metrics_tidy.csv",
        "data_manifest": f"{R}/data/manifest.json",
        "histories": student_histories(),
        "shares": f"{R}/gradient_analysis/head_share.csv",
        "profile": f"{R}/gradient_analysis/rank_profile.csv",
        "sweep": f"{R}/tables/sweep.csv",
        "curves": student_curves() if SPEC.curves else [],
        "token_profile": f"{R}/gradient_analysis/token_profile.csv",
        "token_gate": f"{R}/gradient_analysis/token_gate.csv",
    }
    needed = dict.fromkeys(k for name in SPEC.figures for k in FIGURE_INPUTS[name])
    return {k: files[k] for k in needed}


def figure_args(wc, input):
    """`--<name> <files>` for every named input, quoted."""
    args = []
    for name in figure_inputs():
        files = input[name] if isinstance(input[name], list) else [input[name]]
        args.append(f"--{name.replace('_', '-')} " + " ".join(f"'{f}'" for f in files))
    return " ".join(args)


def figure_options():
    """The figure settings the config holds (ECE bins, the class-sweep OOD set and measure)."""
    opts = []
    if "ece_bins" in config.get("evaluation", {}):
        opts.append(f"--ece-bins {int(config['evaluation']['ece_bins'])}")
    for key in ("ood_set", "measure"):
        if key in config.get("figure", {}):
            opts.append(f"--{key.replace('_', '-')} {config['figure'][key]}")
    return " ".join(opts)


def gradient_args():
    """The configured settings of the analysis (the stage's own defaults for the rest)."""
    ga = config.get("gradient_analysis", {})
    args = [f"--ks {' '.join(str(k) for k in ga['ks'])}"] if "ks" in ga else []
    args += [f"--{k.replace('_', '-')} {int(ga[k])}" for k in ("batch", "profile_k") if k in ga]
    return " ".join(args)
