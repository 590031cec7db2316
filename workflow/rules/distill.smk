STUDENT_LOG = f"{RUN}/logs/distill/{{method}}/seed{{seed}}.log"
STUDENT = f"{RUN}/students/{{method}}/seed{{seed}}"


use rule train_member as distill with:
    input:
        code("distill"),
        data=f"{R}/data/manifest.json",
        splits=P.data_files(),
        **P.student_teacher_inputs(),
        **P.student_data_inputs(),
        members=P.member_files(),
        lr=lr_choice_input,
    output:
        model=f"{STUDENT}/model.safetensors",
        meta=f"{STUDENT}/model.json",
        history=f"{STUDENT}/history.csv",
        res=f"{RUN}/benchmarks/distill/{{method}}/seed{{seed}}.resources.json",
        **({"curve": f"{STUDENT}/curve.csv"} if SPEC.curves else {}),
    params:
        stage="distill",
        progress=progress_record(STUDENT_LOG),
        tensorboard=fill(f"{RUN}/tensorboard/students/{{method}}/seed{{seed}}"),
        cfg=lambda wc: as_json(P.student_config(wc.method, wc.get("vocab"))),
        ckpt=fill(f"{RUN}/checkpoints/students/{{method}}/seed{{seed}}.pt"),
        teacher=teacher_args,
    log:
        STUDENT_LOG,
    benchmark:
        f"{RUN}/benchmarks/distill/{{method}}/seed{{seed}}.tsv"
