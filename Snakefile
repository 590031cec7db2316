# proxy-end2: ensemble -> teacher cache -> EnD / EnD2 / PD-EnD2 students -> metrics -> report.
#   snakemake --cores 2                                  default experiment (config/config.yaml)
#   snakemake --cores 2 --configfile config/smoke.yaml   one-minute smoke run
#   snakemake --cores 2 --configfile config/text.yaml    token task + class-count sweep
#   snakemake --profile profiles/slurm                   on a SLURM cluster
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


if TASK == "text":  # config/text.yaml: Austen next-token task at several vocabulary sizes

    include: "workflow/rules/text.smk"

else:  # image classification (Fashion-MNIST, ImageNet-style folders)

    include: "workflow/rules/data.smk"
    include: "workflow/rules/ensemble.smk"
    include: "workflow/rules/teacher.smk"
    include: "workflow/rules/distill.smk"
    include: "workflow/rules/evaluate.smk"
    include: "workflow/rules/gradient.smk"
    include: "workflow/rules/figures.smk"

    ALL_TARGETS = [
        f"{R}/teacher/manifest.json",
        f"{R}/tables/metrics_tidy.csv",
        *rules.figures.output,
    ]


rule all:
    """Everything the experiment produces (the default target)."""
    default_target: True
    input:
        ALL_TARGETS,
