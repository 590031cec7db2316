MEMBER_LOG = f"{RUN}/logs/train_member/seed{{seed}}.log"


rule train_member:
    """Train one deep-ensemble member (members differ only by seed, unless overridden). The
    template of every training rule: distill and lr_trial are `use rule` of it, with their own
    stage, inputs, outputs and config slice."""
    input:
        code("train"),
        data=f"{R}/data/manifest.json",
        splits=P.data_files(),
    output:
        model=f"{RUN}/members/seed{{seed}}/model.safetensors",
        meta=f"{RUN}/members/seed{{seed}}/model.json",
        history=f"{RUN}/members/seed{{seed}}/history.csv",
        res=f"{RUN}/benchmarks/train_member/seed{{seed}}.resources.json",
    params:
        stage="train",
        launch=P.launch(),
        per_process=per_process(),
        progress=progress_record(MEMBER_LOG),
        tensorboard=fill(f"{RUN}/tensorboard/members/seed{{seed}}"),
        task=TASK,
        device=DEVICE,
        k=k_arg,
        seed=lambda wc: wc.seed,
        cfg=lambda wc: as_json(P.member_config(wc.seed)),
        data=lambda wc, input: os.path.dirname(input.data),
        ckpt=fill(f"{RUN}/checkpoints/members/seed{{seed}}.pt"),
        teacher="",  # the students' teacher: --teacher, --members, --lr-from
    log:
        MEMBER_LOG,
    benchmark:
        f"{RUN}/benchmarks/train_member/seed{{seed}}.tsv"
    threads: P.job_threads()
    resources:
        **P.job_resources(),
    shell:
        "{params.launch} pipeline.stages.{params.stage} --task {params.task}"
        " --data {params.data:q} {params.k} --seed {params.seed} --config-json {params.cfg:q}"
        " --device {params.device} --out {output.model:q} --ckpt {params.ckpt:q}"
        " --threads {params.per_process} --resources-json {output.res:q} {params.teacher}"
        " --progress {params.progress:q} --tensorboard {params.tensorboard:q} > {log:q} 2>&1"
