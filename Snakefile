# proxy-end2: ensemble -> teacher cache -> EnD / EnD2 / PD-EnD2 students -> metrics -> report.
#   snakemake --cores 2                                  default experiment (config/config.yaml)
#   snakemake --cores 2 --configfile config/smoke.yaml   one-minute smoke run
#   snakemake --profile profiles/slurm                   on a SLURM cluster
# The default config is loaded only when none is given: Snakemake would otherwise deep-merge a
# --configfile over it, leaking the default's datasets and methods into other experiments.
if not config:

    configfile: "config/config.yaml"



report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    seed=r"\d+",
    method="|".join(METHODS),


include: "workflow/rules/data.smk"
include: "workflow/rules/ensemble.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        f"{R}/teacher/manifest.json",
        f"{R}/tables/metrics_tidy.csv",
        rules.figures.output,
