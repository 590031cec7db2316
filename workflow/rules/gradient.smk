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
