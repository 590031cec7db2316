rule gradient_analysis:
    """Head share of the gradient of EnD / EnD2 / PD-EnD2 on synthetic ensembles, K up to 40k."""
    input:
        code("gradient_analysis"),
    output:
        shares=f"{R}/gradient_analysis/head_share.csv",
        profile=f"{R}/gradient_analysis/rank_profile.csv",
    params:
        args=P.gradient_args(),
        out=lambda wc, output: os.path.dirname(output.shares),
    log:
        f"{R}/logs/gradient_analysis.log",
    benchmark:
        f"{R}/benchmarks/gradient_analysis.tsv"
    threads: THREADS
    shell:
        "python -m pipeline.stages.gradient_analysis --out {params.out:q} {params.args}"
        " > {log:q} 2>&1"


if SPEC.gradient_diagnostic:  # the task's diagnostic on real data (TaskSpec)

    rule token_gradients:
        """Mean |dL/dz_c| against the rank of pi_bar_c on validation tokens, and the share of
        tokens whose ensemble top class sits below z = 0, for each group's seed-0 student at V =
        {vocab} (a job per V of gradient_analysis.token_vocab)."""
        input:
            code("token_gradients"),
            data=f"{R}/data/manifest.json",
            splits=P.data_files(),
            teacher=f"{R}/V{{vocab}}/teacher/manifest.json",
            members=P.member_files(),
            students=lambda wc: [
                f"{R}/V{wc.vocab}/students/{g}/seed{STUDENT_SEEDS[0]}/model.safetensors"
                for g in P.token_groups[int(wc.vocab)]
            ],
        output:
            profile=f"{R}/gradient_analysis/V{{vocab}}/token_profile.csv",
            gate=f"{R}/gradient_analysis/V{{vocab}}/token_gate.csv",
        wildcard_constraints:
            vocab="|".join(str(v) for v in P.token_vocabs),
        params:
            task=TASK,
            data=lambda wc, input: os.path.dirname(input.data),
            teacher=lambda wc, input: os.path.dirname(input.teacher),
            students=lambda wc, input: " ".join(
                f"'{g}={p}'" for g, p in zip(P.token_groups[int(wc.vocab)], input.students)
            ),
            args=P.token_args(),
            out=lambda wc, output: os.path.dirname(output.profile),
        log:
            f"{R}/logs/token_gradients/V{{vocab}}.log",
        threads: THREADS
        shell:
            "python -m pipeline.stages.token_gradients --task {params.task}"
            " --data {params.data:q} --num-classes {wildcards.vocab} --teacher {params.teacher:q}"
            " --members {input.members:q} --students {params.students} {params.args}"
            " --threads {threads} --out {params.out:q} > {log:q} 2>&1"
