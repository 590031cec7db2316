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


if SPEC.curves:  # the token task: the diagnostic on real data
    TOKEN_GROUPS = [g for g in METHODS if TOKEN_VOCAB in GROUP_VOCABS[g]]  # its V's students
    if not TOKEN_GROUPS:
        raise ValueError(
            f"gradient_analysis.token_vocab: no method group runs at V={TOKEN_VOCAB} "
            "(group_vocab_sizes); set token_vocab to a V one of them runs at"
        )

    rule token_gradients:
        """Mean |dL/dz_c| against the rank of pi_bar_c on validation tokens, and the share of
        tokens whose ensemble top class sits below z = 0, for each group's seed-0 student."""
        input:
            code("token_gradients"),
            data=f"{R}/data/manifest.json",
            splits=data_files(),
            teacher=f"{R}/V{TOKEN_VOCAB}/teacher/manifest.json",
            members=[f"{R}/V{TOKEN_VOCAB}/members/seed{s}/model.safetensors" for s in MEMBER_SEEDS],
            students=[
                f"{R}/V{TOKEN_VOCAB}/students/{g}/seed{STUDENT_SEEDS[0]}/model.safetensors"
                for g in TOKEN_GROUPS
            ],
        output:
            profile=f"{R}/gradient_analysis/token_profile.csv",
            gate=f"{R}/gradient_analysis/token_gate.csv",
        params:
            data=lambda wc, input: os.path.dirname(input.data),
            teacher=lambda wc, input: os.path.dirname(input.teacher),
            students=lambda wc, input: " ".join(
                f"'{g}={p}'" for g, p in zip(TOKEN_GROUPS, input.students)
            ),
            sentences=int(config.get("gradient_analysis", {}).get("token_sentences", 200)),
            vocab=TOKEN_VOCAB,
            out=lambda wc, output: os.path.dirname(output.profile),
        log:
            f"{R}/logs/token_gradients.log",
        threads: THREADS
        shell:
            "python -m pipeline.stages.token_gradients --data {params.data:q}"
            " --num-classes {params.vocab} --teacher {params.teacher:q}"
            " --members {input.members:q} --students {params.students}"
            " --sentences {params.sentences} --threads {threads} --out {params.out:q}"
            " > {log:q} 2>&1"
