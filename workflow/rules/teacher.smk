rule cache_teacher:
    """Run every member once over every split; store their statistics (students read only this)."""
    input:
        code("data", "models", "train", "dirichlet", "special", "teacher"),
        manifest=f"{R}/data/manifest.json",
        splits=data_files(),
        members=member_files(),
    output:
        manifest=f"{R}/teacher/manifest.json",
        splits=teacher_files(),
    params:
        device=DEVICE,
        cfg=as_json(teacher_config()),
        data=lambda wc, input: os.path.dirname(input.manifest),
        out=lambda wc, output: os.path.dirname(output.manifest),
        seeds=" ".join(map(str, MEMBER_SEEDS)),
        res=f"{R}/benchmarks/cache_teacher.resources.json",
    log:
        f"{R}/logs/cache_teacher.log",
    benchmark:
        f"{R}/benchmarks/cache_teacher.tsv"
    threads: int(config["teacher"].get("threads", THREADS))  # one job the rest waits on
    resources:
        mem_mb=MEM_MB,
        runtime=RUNTIME,
        gpu=GPU,
    shell:
        "python -m pipeline.teacher --data {params.data} --members {input.members}"
        " --seeds {params.seeds} --out {params.out} --config-json {params.cfg:q}"
        " --device {params.device} --threads {threads}"
        " --resources-json {params.res} > {log} 2>&1"
