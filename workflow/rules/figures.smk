rule figures:
    """Every figure of the task (its spec's figure registry), drawn only from evaluation and
    table outputs (never retrains)."""
    input:
        code("figures"),
        **{kind: figure_files(kind) for kind in P.figure_kinds()},
    output:
        *[fig(name) for name in SPEC.figure_names],
        pdfs=[f"{R}/figures/{name}.pdf" for name in SPEC.figure_names],
    params:
        task=TASK,
        args=figure_args,
        opts=P.figure_options(),
        out=lambda wc, output: os.path.dirname(output.pdfs[0]),
    log:
        f"{R}/logs/figures.log",
    shell:
        "python -m pipeline.stages.figures --task {params.task} --out {params.out:q}"
        " {params.args} {params.opts} > {log:q} 2>&1"
