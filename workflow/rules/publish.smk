rule publish:
    """Copy the tables and chosen figures into docs/ and the README's results block
    (`snakemake --cores 1 publish`, with the run's --configfile)."""
    input:
        code("publish"),
        tables=rules.aggregate.output,
        figures=rules.figures.output,
        lr_search=[f"{R}/tables/lr_search.md"] if LR_SEARCH else [],
    output:
        results=f"docs/{SPEC.published.doc}",
        figures=[f"docs/figures/{name}.png" for name in SPEC.published.figures],
    params:
        task=TASK,
        captions=as_json(dict(SPEC.published.tables)),  # a caption edit republishes
        results=lambda wc, input: os.path.dirname(os.path.dirname(input.tables[0])),
    log:
        f"{R}/logs/publish.log",
    shell:
        "python -m pipeline.stages.publish --task {params.task} --results {params.results:q}"
        " --docs docs --readme README.md > {log:q} 2>&1"
