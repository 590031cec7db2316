# proxy-end2: ensemble -> teacher -> EnD / EnD2 / PD-EnD2 students -> metrics -> tables, figures.
#   snakemake --cores 2                                  default experiment (config/config.yaml)
#   snakemake --cores 2 --configfile config/smoke.yaml   one-minute smoke run
#   snakemake --cores 2 --configfile config/text.yaml    token task + class-count sweep
#   snakemake --profile profiles/slurm                   on a SLURM cluster
# One rule file per stage, shared by every task (config key `task`: a package of pipeline/tasks
# with a spec; image when absent); each rule runs one stage module,
# `python -m pipeline.stages.<stage> --task <task> ...`, with what pipeline.plan.Plan computes.
# The default config is loaded only when none is given: Snakemake would otherwise deep-merge a
# --configfile over it, leaking the default's datasets and methods into other experiments.
if not config:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    seed=r"\d+",
    vocab=r"\d+",
    method="|".join(METHODS),
    lr=r"[0-9.e+-]+",


include: "workflow/rules/data.smk"
include: "workflow/rules/ensemble.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/distill.smk"


if P.ensemble_targets:

    include: "workflow/rules/translations.smk"


if LR_SEARCH:

    include: "workflow/rules/lr_search.smk"


include: "workflow/rules/evaluate.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/gradient.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/publish.smk"


rule all:
    """Everything the experiment produces (the default target)."""
    default_target: True
    input:
        runs(f"{RUN}/teacher/manifest.json"),
        rules.aggregate.output.tidy,
        rules.figures.output,
        [rules.lr_table.output.csv] if LR_SEARCH else [],
