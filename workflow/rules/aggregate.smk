rule aggregate:
    """Tidy metrics of every system -> the task's tables (mean ± std over seeds), and the jobs'
    resource table."""
    input:
        code("aggregate"),
        metrics=runs(f"{RUN}/eval/{{system}}/metrics.csv", system=SYSTEMS),
        histories=runs(f"{RUN}/members/seed{{seed}}/history.csv", seed=MEMBER_SEEDS)
        + student_histories(),
        resources=resource_records(),
    output:
        tidy=f"{R}/tables/metrics_tidy.csv",
        tables=[table(name) for name in SPEC.tables],
        renderings=[
            f"{R}/tables/{name}.{ext}"
            for name, formats in SPEC.tables.items()
            for ext in formats
            if ext != "csv"
        ],
        resources=report(f"{R}/tables/resources.csv", caption="../report/resources.rst",
                         category="Tables"),
    params:
        task=TASK,
        out=lambda wc, output: os.path.dirname(output.tidy),
        root=lambda wc, output: os.path.dirname(os.path.dirname(output.tidy)),
    log:
        f"{R}/logs/aggregate.log",
    shell:
        "python -m pipeline.stages.aggregate --task {params.task} --metrics {input.metrics:q}"
        " --histories {input.histories:q} --resources {input.resources:q} --root {params.root:q}"
        " --out {params.out:q} > {log:q} 2>&1"
