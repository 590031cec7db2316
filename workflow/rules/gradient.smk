rule gradient_analysis:
    """Head share of the gradient of EnD / EnD2 / PD-EnD2 on synthetic ensembles, K up to 40k."""
    input:
        code("gradient_analysis"),
    output:
        shares=f"{R}/gradient_analysis/head_share.csv",
        profile=f"{R}/gradient_analysis/rank_profile.csv",
    params:
        args=gradient_args(),
        out=lambda wc, output: os.path.dirname(output.shares),
    log:
        f"{R}/logs/gradient_analysis.log",
    benchmark:
        f"{R}/benchmarks/gradient_analysis.tsv"
    threads: THREADS
    shell:
        "python -m pipeline.stages.gradient_analysis --out {params.out:q} {params.args}"
        " > {log:q} 2>&1"
