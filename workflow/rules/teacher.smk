TEACHER_LOG = f"{RUN}/logs/cache_teacher.log"


rule cache_teacher:
    """Run every member once over the splits the task's teacher artifact holds."""
    input:
        code("teacher"),
        manifest=f"{R}/data/manifest.json",
        splits=P.data_files(),
        members=P.member_files(),
    output:
        manifest=f"{RUN}/teacher/manifest.json",
        splits=P.teacher_files(),
        res=f"{RUN}/benchmarks/cache_teacher.resources.json",
    params:
        launch=P.launch(SPEC.shared_prediction),
        per_process=per_process(SPEC.shared_prediction),
        progress=progress_record(TEACHER_LOG),
        task=TASK,
        device=DEVICE,
        k=k_arg,
        cfg=as_json(P.teacher_config()),
        data=lambda wc, input: os.path.dirname(input.manifest),
        out=lambda wc, output: os.path.dirname(output.manifest),
        seeds=" ".join(map(str, MEMBER_SEEDS)),
    log:
        TEACHER_LOG,
    benchmark:
        f"{RUN}/benchmarks/cache_teacher.tsv"
    # one job the rest wait on: teacher.threads per process
    threads: P.job_threads(SPEC.shared_prediction, config.get("teacher", {}).get("threads"))
    resources:
        **P.job_resources(SPEC.shared_prediction),
    shell:
        "{params.launch} pipeline.stages.teacher --task {params.task} --data {params.data:q} {params.k}"
        " --members {input.members:q} --seeds {params.seeds} --out {params.out:q}"
        " --config-json {params.cfg:q} --device {params.device} --threads {params.per_process}"
        " --resources-json {output.res:q}"
        " --progress {params.progress:q} > {log:q} 2>&1"
