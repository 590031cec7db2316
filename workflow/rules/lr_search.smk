# The learning-rate search (config key lr_search; pipeline.stages.lr_search): one student per
# (method group, rate) at one V and seed, each group's rate chosen on validation, then every
# student of the sweep trains at its group's chosen rate (rule distill reads choice.json).
LR_TRIAL = f"{R}/lr_search/{{method}}/lr{{lr}}"
LR_TRIAL_LOG = f"{R}/logs/lr_trial/{{method}}/lr{{lr}}.log"


rule lr_trial:
    """One student of the learning-rate grid (the distill stage at lr_search.vocab / seed)."""
    input:
        code("distill"),
        data=f"{R}/data/manifest.json",
        splits=data_files(),
        teacher=f"{LR_RUN}/teacher/manifest.json",
        cache=[f"{LR_RUN}/teacher/{split}.safetensors" for split in TEACHER_SPLITS],
        members=[f"{LR_RUN}/members/seed{s}/model.safetensors" for s in MEMBER_SEEDS],
    output:
        model=f"{LR_TRIAL}/model.safetensors",
        meta=f"{LR_TRIAL}/model.json",
        history=f"{LR_TRIAL}/history.csv",
        res=f"{R}/benchmarks/lr_trial/{{method}}/lr{{lr}}.resources.json",
        **({"curve": f"{LR_TRIAL}/curve.csv"} if SPEC.curves else {}),
    params:
        launch=launch(),
        per_process=per_process(),
        progress=progress_record(LR_TRIAL_LOG),
        tensorboard=fill(f"{R}/tensorboard/lr_trial/{{method}}/lr{{lr}}"),
        task=TASK,
        device=DEVICE,
        vocab=LR_VOCAB,
        seed=LR_SEED,
        cfg=lambda wc: as_json(lr_trial_config(wc.method, wc.lr)),
        data=lambda wc, input: os.path.dirname(input.data),
        teacher=lambda wc, input: os.path.dirname(input.teacher),
        ckpt=fill(f"{R}/checkpoints/lr_trial/{{method}}/lr{{lr}}.pt"),
    log:
        LR_TRIAL_LOG,
    benchmark:
        f"{R}/benchmarks/lr_trial/{{method}}/lr{{lr}}.tsv"
    threads: job_threads()
    resources:
        **job_resources(),
    shell:
        "{params.launch} pipeline.stages.distill --task {params.task} --data {params.data:q}"
        " --num-classes {params.vocab} --teacher {params.teacher:q} --members {input.members:q}"
        " --seed {params.seed} --config-json {params.cfg:q} --device {params.device}"
        " --out {output.model:q} --ckpt {params.ckpt:q} --threads {params.per_process}"
        " --resources-json {output.res:q}"
        " --progress {params.progress:q} --tensorboard {params.tensorboard:q} > {log:q} 2>&1"


rule lr_choice:
    """A method group's learning rate: the trial with the best validation agreement."""
    input:
        code("lr_search"),
        histories=expand(f"{LR_TRIAL}/history.csv", lr=LR_RATES, allow_missing=True),
    output:
        f"{R}/lr_search/{{method}}/choice.json",
    params:
        lrs=" ".join(LR_RATES),
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
