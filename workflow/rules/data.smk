rule prepare_data:
    """Read the raw data once, carve train/val/test, build the OOD and shifted sets."""
    input:
        code("prepare"),
        SPEC.raw_inputs(config),
    output:
        manifest=f"{R}/data/manifest.json",
        splits=P.data_files(),
    params:
        task=TASK,
        cfg=as_json({key: config[key] for key in SPEC.prepare_keys}),
        out=lambda wc, output: os.path.dirname(output.manifest),
    log:
        f"{R}/logs/prepare_data.log",
    benchmark:
        f"{R}/benchmarks/prepare_data.tsv"
    threads: 1
    resources:
        mem_mb=P.mem_mb,
        runtime=P.runtime,
    shell:
        "python -m pipeline.stages.prepare --task {params.task} --config-json {params.cfg:q}"
        " --out {params.out:q} > {log:q} 2>&1"
