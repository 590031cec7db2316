rule evaluate:
    """Metrics, uncertainty measures, PRR, OOD detection and shift robustness of one system."""
    input:
        code("data", "models", "train", "metrics", "dirichlet", "special", "teacher", "distill",
             "uncertainty", "evaluate"),
        data=f"{R}/data/manifest.json",
        splits=data_files(),
        teacher=f"{R}/teacher/manifest.json",
        cache=teacher_files(),
        model=system_model,
    output:
        metrics=f"{R}/eval/{{system}}/metrics.csv",
        arrays=f"{R}/eval/{{system}}/per_example.safetensors",
    params:
        device=DEVICE,
        cfg=as_json(config["evaluation"]),
        data=lambda wc, input: os.path.dirname(input.data),
        teacher=lambda wc, input: os.path.dirname(input.teacher),
        out=lambda wc, output: os.path.dirname(output.metrics),
        model=lambda wc, input: f"--model {input.model}" if input.model else "",
        res=f"{R}/benchmarks/evaluate/{{system}}.resources.json",
    wildcard_constraints:
        system=r"member-\d+|ensemble|[a-z0-9_]+-seed\d+",
    log:
        f"{R}/logs/evaluate/{{system}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{system}}.tsv"
    threads: THREADS
    resources:
        mem_mb=MEM_MB,
        runtime=RUNTIME,
        gpu=GPU,
    shell:
        "python -m pipeline.evaluate system --system {wildcards.system} --data {params.data}"
        " --teacher {params.teacher} {params.model} --out {params.out}"
        " --config-json {params.cfg:q} --device {params.device} --threads {threads}"
        " --resources-json {params.res} > {log} 2>&1"


rule aggregate:
    """Tidy metrics of every system -> tables (mean ± std over seeds) in CSV, Markdown, LaTeX."""
    input:
        code("evaluate"),
        metrics=expand(f"{R}/eval/{{system}}/metrics.csv", system=SYSTEMS),
    output:
        tidy=f"{R}/tables/metrics_tidy.csv",
        main=report(f"{R}/tables/main.csv", caption="../report/tables.rst", category="Tables"),
        prr=report(f"{R}/tables/prr.csv", caption="../report/tables.rst", category="Tables"),
        ood=report(f"{R}/tables/ood.csv", caption="../report/tables.rst", category="Tables"),
        shift=report(f"{R}/tables/shift.csv", caption="../report/tables.rst", category="Tables"),
        shift_sets=report(f"{R}/tables/shift_sets.csv", caption="../report/tables.rst",
                          category="Tables"),
        renderings=expand(f"{R}/tables/{{name}}.{{ext}}", name=TABLES, ext=["md", "tex"]),
        resources=report(f"{R}/tables/resources.csv", caption="../report/resources.rst",
                         category="Tables"),
    params:
        out=lambda wc, output: os.path.dirname(output.tidy),
        benchmarks=f"{R}/benchmarks",
    log:
        f"{R}/logs/aggregate.log",
    shell:
        "python -m pipeline.evaluate aggregate --metrics {input.metrics} --out {params.out}"
        " --resources-dir {params.benchmarks} > {log} 2>&1"
