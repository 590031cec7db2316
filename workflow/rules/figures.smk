rule gradient_analysis:
    """Head share of the gradient of EnD / EnD2 / PD-EnD2 on synthetic ensembles, K up to 40k."""
    input:
        code("dirichlet", "special", "gradient_analysis"),
    output:
        shares=f"{R}/gradient_analysis/head_share.csv",
        profile=f"{R}/gradient_analysis/rank_profile.csv",
    params:
        ks=" ".join(str(k) for k in _GA.get("ks", [10, 100, 1000, 10000, 40000])),
        batch=_GA.get("batch", 8),
        profile_k=_GA.get("profile_k", 10000),
        out=lambda wc, output: os.path.dirname(output.shares),
    log:
        f"{R}/logs/gradient_analysis.log",
    benchmark:
        f"{R}/benchmarks/gradient_analysis.tsv"
    threads: THREADS
    shell:
        "python -m pipeline.gradient_analysis --out {params.out} --ks {params.ks}"
        " --batch {params.batch} --profile-k {params.profile_k} > {log} 2>&1"


rule figures:
    """Every figure, drawn only from evaluation outputs (never retrains anything)."""
    input:
        code("metrics", "evaluate", "figures"),
        metrics=expand(f"{R}/eval/{{system}}/per_example.safetensors", system=SYSTEMS),
        tidy=f"{R}/tables/metrics_tidy.csv",
        histories=expand(f"{R}/students/{{method}}/seed{{seed}}/history.csv", method=METHODS,
                         seed=STUDENT_SEEDS),
        shares=f"{R}/gradient_analysis/head_share.csv",
        profile=f"{R}/gradient_analysis/rank_profile.csv",
    output:
        fig("rejection_curves"),
        fig("ood_histograms"),
        fig("reliability"),
        fig("shift"),
        fig("training_curves"),
        fig("knowledge_scatter"),
        fig("gradient_analysis"),
        pdfs=expand(f"{R}/figures/{{name}}.pdf", name=FIGURES),
    params:
        results=lambda wc, input: os.path.dirname(os.path.dirname(input.tidy)),
        out=lambda wc, output: os.path.dirname(output.pdfs[0]),
    log:
        f"{R}/logs/figures.log",
    shell:
        "python -m pipeline.figures --results {params.results} --out {params.out} > {log} 2>&1"


rule publish:
    """Copy the tables and chosen figures into docs/ and the README's results block
    (run for the default experiment: `snakemake --cores 1 publish`)."""
    input:
        code("publish"),
        tables=rules.aggregate.output,
        figures=rules.figures.output,
    output:
        results="docs/results.md",
        figures=expand("docs/figures/{name}.png", name=["ood_histograms", "rejection_curves",
                                                       "shift", "gradient_analysis"]),
    params:
        results=lambda wc, input: os.path.dirname(os.path.dirname(input.tables[0])),
    log:
        f"{R}/logs/publish.log",
    shell:
        "python -m pipeline.publish --results {params.results} --docs docs --readme README.md"
        " > {log} 2>&1"
