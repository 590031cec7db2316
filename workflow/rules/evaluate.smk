EVAL_LOG = f"{RUN}/logs/evaluate/{{system}}.log"


rule evaluate:
    """The task's metrics (point predictions, uncertainty, PRR, OOD detection...) of one system."""
    input:
        code("evaluate"),
        data=f"{R}/data/manifest.json",
        splits=P.data_files(),
        teacher=f"{RUN}/teacher/manifest.json",
        cache=P.teacher_files(),
        model=system_model,
    output:
        metrics=f"{RUN}/eval/{{system}}/metrics.csv",
        arrays=f"{RUN}/eval/{{system}}/{SPEC.arrays}",
        res=f"{RUN}/benchmarks/evaluate/{{system}}.resources.json",
    params:
        launch=P.launch(SPEC.shared_prediction),
        per_process=per_process(SPEC.shared_prediction),
        progress=progress_record(EVAL_LOG),
        task=TASK,
        device=DEVICE,
        k=k_arg,
        cfg=as_json(config.get("evaluation", {})),
        data=lambda wc, input: os.path.dirname(input.data),
        teacher=lambda wc, input: os.path.dirname(input.teacher),
        out=lambda wc, output: os.path.dirname(output.metrics),
        model=lambda wc, input: f"--model '{input.model}'" if input.model else "",
    wildcard_constraints:
        system=r"member-\d+|ensemble|[a-z0-9_]+-seed\d+",
    log:
        EVAL_LOG,
    benchmark:
        f"{RUN}/benchmarks/evaluate/{{system}}.tsv"
    threads: P.job_threads(SPEC.shared_prediction)
    resources:
        **P.job_resources(SPEC.shared_prediction),
    shell:
        "{params.launch} pipeline.stages.evaluate --task {params.task} --system {wildcards.system} {params.k}"
        " --data {params.data:q} --teacher {params.teacher:q} {params.model} --out {params.out:q}"
        " --config-json {params.cfg:q} --device {params.device} --threads {params.per_process}"
        " --resources-json {output.res:q}"
        " --progress {params.progress:q} > {log:q} 2>&1"
