rule figures:
    """Every figure of the task, drawn only from evaluation and table outputs (never retrains)."""
    input:
        code("figures"),
        **figure_inputs(),
    output:
        *[fig(name) for name in SPEC.figures],
        pdfs=[f"{R}/figures/{name}.pdf" for name in SPEC.figures],
    params:
        task=TASK,
        args=figure_args,
        opts=figure_options(),
        out=lambda wc, output: os.path.dirname(output.pdfs[0]),
    log:
        f"{R}/logs/figures.log",
    shell:
        "python -m pipeline.stages.figures --task {params.task} --out {params.out:q}"
        " {params.args} {params.opts} > {log:q} 2>&1"
