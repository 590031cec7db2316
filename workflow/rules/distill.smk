rule distill:
    """Train one student from the teacher cache (same budget for every method)."""
    input:
        code("data", "models", "train", "metrics", "dirichlet", "special", "teacher", "distill"),
        data=f"{R}/data/manifest.json",
        train=f"{R}/data/train.safetensors",
        teacher=f"{R}/teacher/manifest.json",
        cache=teacher_files(),
    output:
        model=f"{R}/students/{{method}}/seed{{seed}}/model.safetensors",
        meta=f"{R}/students/{{method}}/seed{{seed}}/model.json",
        history=f"{R}/students/{{method}}/seed{{seed}}/history.csv",
    params:
        device=DEVICE,
        cfg=lambda wc: as_json(student_config(wc.method)),
        data=lambda wc, input: os.path.dirname(input.data),
        teacher=lambda wc, input: os.path.dirname(input.teacher),
        ckpt=lambda wc: f"{R}/checkpoints/students/{wc.method}/seed{wc.seed}.pt",
        res=lambda wc: f"{R}/benchmarks/distill/{wc.method}/seed{wc.seed}.resources.json",
    log:
        f"{R}/logs/distill/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/distill/{{method}}/seed{{seed}}.tsv"
    threads: THREADS
    resources:
        mem_mb=MEM_MB,
        runtime=RUNTIME,
        gpu=GPU,
    shell:
        "python -m pipeline.distill --data {params.data} --teacher {params.teacher}"
        " --seed {wildcards.seed} --config-json {params.cfg:q} --device {params.device}"
        " --out {output.model} --ckpt {params.ckpt} --threads {threads}"
        " --resources-json {params.res} > {log} 2>&1"
