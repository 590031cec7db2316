MEMBER_LOG = f"{RUN}/logs/train_member/seed{{seed}}.log"


rule train_member:
    """Train one deep-ensemble member (members differ only by seed, unless overridden)."""
    input:
        code("train"),
        manifest=f"{R}/data/manifest.json",
        splits=data_files(),
    output:
        model=f"{RUN}/members/seed{{seed}}/model.safetensors",
        meta=f"{RUN}/members/seed{{seed}}/model.json",
        history=f"{RUN}/members/seed{{seed}}/history.csv",
        res=f"{RUN}/benchmarks/train_member/seed{{seed}}.resources.json",
    params:
        launch=launch(),
        per_process=per_process(),
        progress=progress_record(MEMBER_LOG),
        tensorboard=fill(f"{RUN}/tensorboard/members/seed{{seed}}"),
        task=TASK,
        device=DEVICE,
        k=k_arg,
        cfg=lambda wc: as_json(member_config(wc.seed)),
        data=lambda wc, input: os.path.dirname(input.manifest),
        ckpt=fill(f"{RUN}/checkpoints/members/seed{{seed}}.pt"),
    log:
        MEMBER_LOG,
    benchmark:
        f"{RUN}/benchmarks/train_member/seed{{seed}}.tsv"
    threads: job_threads()
    resources:
        **job_resources(),
    shell:
        "{params.launch} pipeline.stages.train --task {params.task} --data {params.data:q} {params.k}"
        " --seed {wildcards.seed} --config-json {params.cfg:q} --device {params.device}"
        " --out {output.model:q} --ckpt {params.ckpt:q} --threads {params.per_process}"
        " --resources-json {output.res:q}"
        " --progress {params.progress:q} --tensorboard {params.tensorboard:q} > {log:q} 2>&1"
