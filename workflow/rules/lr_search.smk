# The learning-rate search (config key lr_search; pipeline.stages.lr_search): one student per
# (method group, rate) at one V and seed, each group's rate chosen on validation, then every
# student of the sweep trains at its group's chosen rate (rule distill reads choice.json).
LR_TRIAL = f"{R}/lr_search/{{method}}/lr{{lr}}"
LR_TRIAL_LOG = f"{R}/logs/lr_trial/{{method}}/lr{{lr}}.log"


use rule distill as lr_trial with:
    input:
        code("distill"),
        data=f"{R}/data/manifest.json",
        splits=P.data_files(),
        **P.student_teacher_inputs(P.lr_run),
        **P.student_data_inputs(P.lr_run),
        members=P.member_files(P.lr_run),
    output:
        model=f"{LR_TRIAL}/model.safetensors",
        meta=f"{LR_TRIAL}/model.json",
        history=f"{LR_TRIAL}/history.csv",
        res=f"{R}/benchmarks/lr_trial/{{method}}/lr{{lr}}.resources.json",
        **({"curve": f"{LR_TRIAL}/curve.csv"} if SPEC.curves else {}),
    params:
        progress=progress_record(LR_TRIAL_LOG),
        tensorboard=fill(f"{R}/tensorboard/lr_trial/{{method}}/lr{{lr}}"),
        k=f"--num-classes {P.lr_vocab}",
        seed=P.lr_seed,
        cfg=lambda wc: as_json(P.lr_trial_config(wc.method, wc.lr)),
        ckpt=fill(f"{R}/checkpoints/lr_trial/{{method}}/lr{{lr}}.pt"),
    log:
        LR_TRIAL_LOG,
    benchmark:
        f"{R}/benchmarks/lr_trial/{{method}}/lr{{lr}}.tsv"


rule lr_choice:
    """A method group's learning rate: the trial with the best validation agreement."""
    input:
        code("lr_search"),
        histories=expand(f"{LR_TRIAL}/history.csv", lr=P.lr_rates, allow_missing=True),
    output:
        f"{R}/lr_search/{{method}}/choice.json",
    params:
        lrs=" ".join(P.lr_rates),
    log:
        f"{R}/logs/lr_choice/{{method}}.log",
    shell:
        "python -m pipeline.stages.lr_search choose --group {wildcards.method}"
        " --lrs {params.lrs} --histories {input.histories:q} --out {output:q} > {log:q} 2>&1"


rule lr_table:
    """Every group's grid and choice (tables/lr_search.csv and .md)."""
    input:
        code("lr_search"),
        choices=expand(f"{R}/lr_search/{{method}}/choice.json", method=METHODS),
    output:
        csv=f"{R}/tables/lr_search.csv",
        md=f"{R}/tables/lr_search.md",
    log:
        f"{R}/logs/lr_table.log",
    shell:
        "python -m pipeline.stages.lr_search table --choices {input.choices:q}"
        " --out {output.csv:q} > {log:q} 2>&1"
