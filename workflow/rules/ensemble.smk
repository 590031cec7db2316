rule train_member:
    """Train one deep-ensemble member (members differ only by seed, unless overridden)."""
    input:
        code("data", "models", "train", "metrics"),
        manifest=f"{R}/data/manifest.json",
        train=f"{R}/data/train.safetensors",
        val=f"{R}/data/val.safetensors",
    output:
        model=f"{R}/members/seed{{seed}}/model.safetensors",
        meta=f"{R}/members/seed{{seed}}/model.json",
        history=f"{R}/members/seed{{seed}}/history.csv",
    params:
        device=DEVICE,
        cfg=lambda wc: as_json(member_config(wc.seed)),
        data=lambda wc, input: os.path.dirname(input.manifest),
        ckpt=lambda wc: f"{R}/checkpoints/members/seed{wc.seed}.pt",
        res=lambda wc: f"{R}/benchmarks/train_member/seed{wc.seed}.resources.json",
    log:
        f"{R}/logs/train_member/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train_member/seed{{seed}}.tsv"
    threads: THREADS
    resources:
        mem_mb=MEM_MB,
        runtime=RUNTIME,
        gpu=GPU,
    shell:
        "python -m pipeline.train --data {params.data} --seed {wildcards.seed}"
        " --config-json {params.cfg:q} --device {params.device} --out {output.model}"
        " --ckpt {params.ckpt} --threads {threads}"
        " --resources-json {params.res} > {log} 2>&1"
