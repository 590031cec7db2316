# Config validation, the run's plan (pipeline.plan: layout, systems, config slices, how jobs
# start) and the helpers that need Snakemake's objects (rules, report, the repository root).
# Nothing here imports torch or matplotlib, so building the DAG stays fast.
import os
from pathlib import Path

from snakemake.utils import validate

from pipeline import tasks
from pipeline.config import check as check_config, check_keys
from pipeline.imports import stage_closure
from pipeline.plan import Plan, as_json
from pipeline.progress import record_for


TASK = config.get("task", tasks.DEFAULT_TASK)
SPEC = tasks.spec(TASK)
check_keys(config)  # before the schema: its validator fails on non-string keys
validate(config, schema=f"../schemas/{SPEC.schema}")
check_config(config, TASK)  # what the schema cannot say (pipeline.config), ConfigError
P = Plan(config, SPEC)

R, RUN = P.R, P.RUN  # the results root; the sub-run's root as a pattern (<R>/V{vocab})
THREADS, DEVICE = P.threads, P.device
REPO = Path(workflow.basedir)
MEMBER_SEEDS, STUDENT_SEEDS = P.member_seeds, P.student_seeds
METHODS, SYSTEMS = P.groups, P.systems
SWEEP, KS = P.sweep, P.ks
LR_SEARCH = P.lr_search
runs = P.runs


def code(stage):
    """The pipeline source files `python -m pipeline.stages.<stage>` runs for this task (its
    import closure, pipeline.imports): editing one reruns that stage's jobs (mtime trigger)."""
    return [os.path.relpath(p) for p in stage_closure(stage, TASK, REPO)]


def per_process(parallel=True):
    """A params function: the threads each process of the job runs (`--threads`), its cores
    (as Snakemake grants them) over its processes on the node."""
    return lambda wildcards, threads: max(1, threads // P.ranks_here(parallel))


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


def lr_choice_input(wc):
    """The `lr` input of the distill rule (the group's choice.json under lr_search), else none."""
    return [f"{R}/lr_search/{wc.method}/choice.json"] if LR_SEARCH else []



def system_model(wc):
    """The student weights a system needs (members and the ensemble read the teacher only)."""
    return [p.format(**dict(wc.items())) for p in P.system_model(wc.system)]


def resource_records():
    """Every job's resource record: the `res` outputs of the rules that write one, expanded
    (called by rules included after those rules)."""
    return (
        runs(rules.train_member.output.res, seed=MEMBER_SEEDS)
        + runs(rules.cache_teacher.output.res)
        + runs(rules.distill.output.res, method=METHODS, seed=STUDENT_SEEDS)
        + runs(rules.evaluate.output.res, system=SYSTEMS)
        + (runs(rules.translate_shard.output.res, shard=P.translation_shards) if P.ensemble_targets else [])
    )


def teacher_args(wc, input):
    """The distill stage's teacher: its artifact, the members, the group's chosen rate."""
    members = " ".join(f"'{m}'" for m in input.members)
    lr = f" --lr-from '{input.lr[0]}'" if input.get("lr") else ""
    # <run>/members/seed<s>/model.safetensors -> <run>/teacher (read where the spec says so)
    teacher = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(input.members[0]))), "teacher")
    return f"--teacher '{teacher}' --members {members}{lr}"


def student_histories():
    """Every student's history.csv (the `history` output of rule distill, expanded)."""
    return runs(rules.distill.output.history, method=METHODS, seed=STUDENT_SEEDS)


def fig(name):
    return report(f"{R}/figures/{name}.png", caption=f"../report/{name}.rst", category="Figures")


def table(name):
    return report(f"{R}/tables/{name}.csv", caption="../report/tables.rst", category="Tables")


def figure_files(kind):
    """The files of a figure input kind (pipeline.figure_registry.INPUTS) in this run: the
    outputs of the rules that write them, as explicit lists (never a folder to glob)."""
    return {
        "per_example": lambda: runs(rules.evaluate.output.arrays, system=SYSTEMS),
        "tidy": lambda: rules.aggregate.output.tidy,
        "data_manifest": lambda: rules.prepare_data.output.manifest,
        "histories": student_histories,
        "shares": lambda: rules.gradient_analysis.output.shares,
        "profile": lambda: rules.gradient_analysis.output.profile,
        "sweep": lambda: f"{R}/tables/sweep.csv",  # one of rule aggregate's tables
        "curves": lambda: runs(rules.distill.output.curve, method=METHODS, seed=STUDENT_SEEDS),
        "token_profile": lambda: expand(rules.token_gradients.output.profile, vocab=P.token_vocabs),
        "token_gate": lambda: expand(rules.token_gradients.output.gate, vocab=P.token_vocabs),
    }[kind]()


def figure_args(wc, input):
    """`--<kind> <files>` for every input kind the task's figures read, quoted."""
    args = []
    for kind in P.figure_kinds():
        files = input[kind] if isinstance(input[kind], list) else [input[kind]]
        args.append(f"--{kind.replace('_', '-')} " + " ".join(f"'{f}'" for f in files))
    return " ".join(args)
