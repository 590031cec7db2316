# The token task (config/text.yaml): Jane Austen next-token prediction at each vocabulary size V
# of the sweep. Per V: members (cross-entropy) -> per-token teacher cache of the evaluation splits
# -> students (the members run online as their teacher) -> metrics; then the sweep tables and
# the class-count figure. Layout: {R}/data (prepared once), {R}/V{vocab}/..., {R}/tables, {R}/figures.

VOCABS = [int(v) for v in config["vocab_sizes"]]
TEXT_SYSTEMS = SYSTEMS  # member-<seed>, ensemble, <method>-seed<seed>
_FIG = config.get("figure", {})
if _FIG.get("ood_set", "permuted") not in config["ood"]["sets"]:
    raise ValueError(
        f"figure.ood_set {_FIG.get('ood_set', 'permuted')!r} is not one of ood.sets "
        f"{config['ood']['sets']}"
    )
TEXT_SPLITS = ["train", "val", "test"] + [f"ood_{s}" for s in config["ood"]["sets"]]
TEXT_CODE = ("text_data", "train", "lm", "dirichlet", "special", "distill")
_ROOT = config["dataset"]["root"]


ALL_TARGETS = [f"{R}/tables/sweep.csv", f"{R}/figures/class_sweep.png"]


rule prepare_text:
    """Tokenise the six novels, split them by chapter, build the OOD sets (once for all V)."""
    input:
        code("text_data"),
        austen=f"{_ROOT}/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb",
        bibles=[f"{_ROOT}/usr/share/sword/mods.d"] if {"kjv", "spanish"} & set(config["ood"]["sets"]) else [],
    output:
        manifest=f"{R}/data/manifest.json",
        vocab=f"{R}/data/vocab.json",
        splits=expand(f"{R}/data/{{split}}.safetensors", split=TEXT_SPLITS),
    params:
        cfg=as_json({"dataset": config["dataset"], "ood": config["ood"]}),
        out=lambda wc, output: os.path.dirname(output.manifest),
    log:
        f"{R}/logs/prepare_text.log",
    shell:
        "python -m pipeline.text_data --config-json {params.cfg:q} --out {params.out} > {log} 2>&1"


rule text_member:
    """One ensemble member at V classes: token-level cross-entropy."""
    input:
        code(*TEXT_CODE),
        data=rules.prepare_text.output.manifest,
        splits=rules.prepare_text.output.splits,
    output:
        model=f"{R}/V{{vocab}}/members/seed{{seed}}/model.safetensors",
        meta=f"{R}/V{{vocab}}/members/seed{{seed}}/model.json",
        history=f"{R}/V{{vocab}}/members/seed{{seed}}/history.csv",
    params:
        device=DEVICE,
        cfg=as_json(text_config("ensemble")),
        data=lambda wc, input: os.path.dirname(input.data),
        ckpt=lambda wc: f"{R}/checkpoints/V{wc.vocab}/members/seed{wc.seed}.pt",
        res=lambda wc: f"{R}/benchmarks/V{wc.vocab}/member/seed{wc.seed}.resources.json",
    log:
        f"{R}/logs/V{{vocab}}/member/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/V{{vocab}}/member/seed{{seed}}.tsv"
    threads: THREADS
    resources:
        mem_mb=MEM_MB,
        runtime=RUNTIME,
        gpu=GPU,
    shell:
        "python -m pipeline.lm member --data {params.data} --vocab {wildcards.vocab}"
        " --seed {wildcards.seed} --config-json {params.cfg:q} --device {params.device}"
        " --out {output.model} --ckpt {params.ckpt} --threads {threads}"
        " --resources-json {params.res} > {log} 2>&1"


rule text_teacher:
    """Per-token outputs of every member and of the ensemble on test and the OOD sets."""
    input:
        code(*TEXT_CODE, "metrics", "uncertainty", "evaluate", "text_eval"),
        data=rules.prepare_text.output.manifest,
        splits=rules.prepare_text.output.splits,
        members=text_members,
    output:
        manifest=f"{R}/V{{vocab}}/teacher/manifest.json",
        splits=expand(
            f"{R}/V{{{{vocab}}}}/teacher/{{split}}.safetensors",
            split=["test"] + [f"ood_{s}" for s in config["ood"]["sets"]],
        ),
    params:
        data=lambda wc, input: os.path.dirname(input.data),
        out=lambda wc, output: os.path.dirname(output.manifest),
    log:
        f"{R}/logs/V{{vocab}}/teacher.log",
    benchmark:
        f"{R}/benchmarks/V{{vocab}}/teacher.tsv"
    threads: THREADS
    resources:
        mem_mb=MEM_MB,
        runtime=RUNTIME,
    shell:
        "python -m pipeline.text_eval teacher --data {params.data} --vocab {wildcards.vocab}"
        " --members {input.members} --out {params.out} --threads {threads} > {log} 2>&1"


rule text_distill:
    """One student at V classes (same budget for every method); the members teach online."""
    input:
        code(*TEXT_CODE),
        data=rules.prepare_text.output.manifest,
        splits=rules.prepare_text.output.splits,
        members=text_members,
    output:
        model=f"{R}/V{{vocab}}/students/{{method}}/seed{{seed}}/model.safetensors",
        meta=f"{R}/V{{vocab}}/students/{{method}}/seed{{seed}}/model.json",
        history=f"{R}/V{{vocab}}/students/{{method}}/seed{{seed}}/history.csv",
    params:
        device=DEVICE,
        cfg=lambda wc: as_json(text_config("students", wc.method)),
        data=lambda wc, input: os.path.dirname(input.data),
        ckpt=lambda wc: f"{R}/checkpoints/V{wc.vocab}/students/{wc.method}/seed{wc.seed}.pt",
        res=lambda wc: f"{R}/benchmarks/V{wc.vocab}/{wc.method}/seed{wc.seed}.resources.json",
    log:
        f"{R}/logs/V{{vocab}}/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/V{{vocab}}/{{method}}/seed{{seed}}.tsv"
    threads: THREADS
    resources:
        mem_mb=MEM_MB,
        runtime=RUNTIME,
        gpu=GPU,
    shell:
        "python -m pipeline.lm student --data {params.data} --vocab {wildcards.vocab}"
        " --seed {wildcards.seed} --members {input.members} --config-json {params.cfg:q}"
        " --device {params.device} --out {output.model} --ckpt {params.ckpt}"
        " --threads {threads} --resources-json {params.res} > {log} 2>&1"


rule text_evaluate:
    """Token and sequence metrics, PRR and OOD detection of one system at V classes."""
    input:
        code(*TEXT_CODE, "metrics", "uncertainty", "evaluate", "text_eval"),
        data=rules.prepare_text.output.manifest,
        splits=rules.prepare_text.output.splits,
        teacher=rules.text_teacher.output.manifest,
        cache=rules.text_teacher.output.splits,
        model=text_model,
    output:
        metrics=f"{R}/V{{vocab}}/eval/{{system}}/metrics.csv",
        arrays=f"{R}/V{{vocab}}/eval/{{system}}/per_sequence.safetensors",
    params:
        data=lambda wc, input: os.path.dirname(input.data),
        teacher=lambda wc, input: os.path.dirname(input.teacher),
        out=lambda wc, output: os.path.dirname(output.metrics),
        model=lambda wc, input: f"--model {input.model}" if input.model else "",
    wildcard_constraints:
        system=r"member-\d+|ensemble|[a-z0-9_]+-seed\d+",
    log:
        f"{R}/logs/V{{vocab}}/eval/{{system}}.log",
    benchmark:
        f"{R}/benchmarks/V{{vocab}}/eval/{{system}}.tsv"
    threads: THREADS
    resources:
        mem_mb=MEM_MB,
        runtime=RUNTIME,
    shell:
        "python -m pipeline.text_eval system --system {wildcards.system} --data {params.data}"
        " --teacher {params.teacher} --vocab {wildcards.vocab} {params.model}"
        " --out {params.out} --threads {threads} > {log} 2>&1"


rule text_aggregate:
    """Every system at every V -> tidy metrics, the sweep (mean ± std over seeds), tables,
    and the training speed of each method against cross-entropy (the members)."""
    input:
        code("evaluate", "text_eval"),
        metrics=expand(f"{R}/V{{vocab}}/eval/{{system}}/metrics.csv", vocab=VOCABS,
                       system=TEXT_SYSTEMS),
        histories=expand(f"{R}/V{{vocab}}/members/seed{{seed}}/history.csv", vocab=VOCABS,
                         seed=MEMBER_SEEDS)
        + expand(f"{R}/V{{vocab}}/students/{{method}}/seed{{seed}}/history.csv", vocab=VOCABS,
                 method=METHODS, seed=STUDENT_SEEDS),
    output:
        tidy=f"{R}/tables/metrics_tidy.csv",
        sweep=report(f"{R}/tables/sweep.csv", caption="../report/text.rst", category="Text"),
        tables=expand(f"{R}/tables/{{name}}.{{ext}}", name=["main", "prr", "ood", "ood_main", "speed"],
                      ext=["csv", "md"]),
    params:
        out=lambda wc, output: os.path.dirname(output.tidy),
    log:
        f"{R}/logs/text_aggregate.log",
    shell:
        "python -m pipeline.text_eval aggregate --metrics {input.metrics}"
        " --histories {input.histories} --out {params.out} > {log} 2>&1"


include: "gradient.smk"


rule text_figures:
    """The headline figure: student-vs-ensemble gaps against the number of classes."""
    input:
        code("figures", "evaluate", "text_eval"),
        sweep=rules.text_aggregate.output.sweep,
        shares=rules.gradient_analysis.output.shares,
    output:
        png=report(f"{R}/figures/class_sweep.png", caption="../report/class_sweep.rst",
                   category="Text"),
        pdf=f"{R}/figures/class_sweep.pdf",
    params:
        out=lambda wc, output: os.path.dirname(output.png),
        ood_set=_FIG.get("ood_set", "permuted"),
        measure=_FIG.get("measure", "knowledge"),
    log:
        f"{R}/logs/text_figures.log",
    shell:
        "python -m pipeline.text_eval figure --sweep {input.sweep} --shares {input.shares}"
        " --out {params.out} --ood-set {params.ood_set} --measure {params.measure} > {log} 2>&1"


rule text_publish:
    """Copy the sweep tables and the class-count figure into docs/ and the README's
    text-results block (for the full text run: `snakemake --cores 1 text_publish --configfile
    config/text.yaml`)."""
    input:
        code("publish"),
        tables=rules.text_aggregate.output.tables,
        figure=rules.text_figures.output.png,
    output:
        results="docs/text_results.md",
        figure="docs/figures/class_sweep.png",
    params:
        results=R,
    log:
        f"{R}/logs/text_publish.log",
    shell:
        "python -m pipeline.publish --kind text --results {params.results} --docs docs"
        " --readme README.md > {log} 2>&1"
