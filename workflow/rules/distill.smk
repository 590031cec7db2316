STUDENT_LOG = f"{RUN}/logs/distill/{{method}}/seed{{seed}}.log"


rule distill:
    """Train one student from the teacher (same budget for every method)."""
    input:
        code("distill"),
        data=f"{R}/data/manifest.json",
        splits=data_files(),
        teacher=f"{RUN}/teacher/manifest.json",
        cache=teacher_files(),
        members=member_files(),
        lr=lr_choice_input,
    output:
        model=f"{RUN}/students/{{method}}/seed{{seed}}/model.safetensors",
        meta=f"{RUN}/students/{{method}}/seed{{seed}}/model.json",
        history=f"{RUN}/students/{{method}}/seed{{seed}}/history.csv",
        res=f"{RUN}/benchmarks/distill/{{method}}/seed{{seed}}.resources.json",
        **({"curve": f"{RUN}/students/{{method}}/seed{{seed}}/curve.csv"} if SPEC.curves else {}),
    params:
        launch=launch(),
        per_process=per_process(),
        progress=progress_record(STUDENT_LOG),
        tensorboard=fill(f"{RUN}/tensorboard/students/{{method}}/seed{{seed}}"),
        task=TASK,
        device=DEVICE,
        k=k_arg,
        cfg=lambda wc: as_json(student_config(wc.method, wc.get("vocab"))),
        data=lambda wc, input: os.path.dirname(input.data),
        teacher=lambda wc, input: os.path.dirname(input.teacher),
        ckpt=fill(f"{RUN}/checkpoints/students/{{method}}/seed{{seed}}.pt"),
        lr=lr_arg,
    log:
        STUDENT_LOG,
    benchmark:
        f"{RUN}/benchmarks/distill/{{method}}/seed{{seed}}.tsv"
    threads: job_threads()
    resources:
        **job_resources(),
    shell:
        "{params.launch} pipeline.stages.distill --task {params.task} --data {params.data:q} {params.k}"
        " --teacher {params.teacher:q} --members {input.members:q} --seed {wildcards.seed}"
        " --config-json {params.cfg:q} --device {params.device} --out {output.model:q}"
        " --ckpt {params.ckpt:q} --threads {params.per_process}"
        " --resources-json {output.res:q} {params.lr}"
        " --progress {params.progress:q} --tensorboard {params.tensorboard:q} > {log:q} 2>&1"
