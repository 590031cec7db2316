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
