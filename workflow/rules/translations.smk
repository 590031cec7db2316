# The students' targets from the ensemble's own outputs (students.targets: ensemble; a task with
# TaskSpec.ensemble_targets; pipeline.stages.translate_train): each shard job translates a slice
# of the train sources the students read, the merge writes the folder rule distill reads.
TRANSLATIONS = P.translations()


rule translate_shard:
    """The ensemble's beam-search translations of one slice of the train sources."""
    input:
        code("translate_train"),
        manifest=f"{R}/data/manifest.json",
        splits=P.data_files(),
        members=P.member_files(),
    output:
        shard=f"{TRANSLATIONS}/shard{{shard}}.safetensors",
        res=f"{RUN}/benchmarks/translate_shard/shard{{shard}}.resources.json",
    wildcard_constraints:
        shard=r"\d+",
    params:
        task=TASK,
        device=DEVICE,
        data=lambda wc, input: os.path.dirname(input.manifest),
        pairs=lambda wc: " ".join(P.translated_pairs(wc.vocab)),
        shards=len(P.translation_shards),
        cfg=as_json(P.translation_config()),
        progress=progress_record(f"{RUN}/logs/translate_shard/shard{{shard}}.log"),
    log:
        f"{RUN}/logs/translate_shard/shard{{shard}}.log",
    benchmark:
        f"{RUN}/benchmarks/translate_shard/shard{{shard}}.tsv"
    threads: THREADS
    resources:  # one GPU per shard (where the config has GPUs): the shards run side by side
        **{**P.job_resources(False), "gpu": min(P.gpu, 1)},
    shell:
        "python -m pipeline.stages.translate_train --task {params.task} --data {params.data:q}"
        " --num-classes {wildcards.vocab} --members {input.members:q}"
        " --train-pairs {params.pairs} --shard {wildcards.shard} --shards {params.shards}"
        " --config-json {params.cfg:q} --device {params.device} --threads {threads}"
        " --out {output.shard:q} --resources-json {output.res:q}"
        " --progress {params.progress:q} > {log:q} 2>&1"


rule ensemble_translations:
    """The shards merged: the students' training targets at V = {vocab}."""
    input:
        code("translate_train"),
        manifest=f"{R}/data/manifest.json",
        members=P.member_files(),
        shards=expand(
            f"{TRANSLATIONS}/shard{{shard}}.safetensors",
            shard=P.translation_shards,
            allow_missing=True,
        ),
    output:
        train=f"{TRANSLATIONS}/train.safetensors",
        manifest=f"{TRANSLATIONS}/manifest.json",
    params:
        task=TASK,
        data=lambda wc, input: os.path.dirname(input.manifest),
        pairs=lambda wc: " ".join(P.translated_pairs(wc.vocab)),
        cfg=as_json(P.translation_config()),
        out=lambda wc, output: os.path.dirname(output.train),
    log:
        f"{RUN}/logs/ensemble_translations.log",
    shell:
        "python -m pipeline.stages.translate_train --task {params.task} --data {params.data:q}"
        " --num-classes {wildcards.vocab} --members {input.members:q}"
        " --train-pairs {params.pairs} --merge {input.shards:q}"
        " --config-json {params.cfg:q} --out {params.out:q} > {log:q} 2>&1"
