"""Stage ``distill`` (``rule distill``): one student of a registered method
(:mod:`pipeline.methods`: EnD, EnD2, PD-EnD2, the forward-KL ablation), trained by the shared
engine on the task's training set against the task's teacher.

Every method of a run uses the same architecture, optimiser, schedule and budget (the
``students`` config slice); only the loss differs. What the student learns from is the task's
``student_teacher``: the image task reads its teacher cache (no member is run), the token task
runs the members online.

Run by hand (what the rule does)::

    python -m pipeline.stages.distill --task image --data results/default/data \
        --teacher results/default/teacher --members m0.safetensors m1.safetensors --seed 0 \
        --config-json '{"method": "pd_end2", "options": {}, ...}' --out s.safetensors --ckpt c.pt
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline import methods
from pipeline.engine import SampleCounter, count_parameters, fit_and_save, training_cli
from pipeline.imports import code_fingerprint
from pipeline.stages.train import seeded_model, start


def distill(
    task: str,
    data_dir: str | Path,
    teacher_dir: str | Path,
    member_files: list[str | Path],
    cfg: dict,
    seed: int,
    out: str | Path,
    ckpt: str | Path,
    num_classes: int | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Train one student with ``cfg["method"]`` and ``cfg["options"]``; returns the history."""
    method, options = cfg["method"], cfg.get("options", {})
    methods.resolve_options(method, options)  # an unknown method or option stops here
    impl, device, ts = start(task, data_dir, cfg, num_classes)
    teacher = impl.student_teacher(teacher_dir, member_files, ts, method, options, device)
    model = seeded_model(impl, cfg, ts, seed)
    log(
        f"student method={method} options={options} seed={seed} {ts.about} "
        f"params={count_parameters(model)} device={device} teacher members={len(member_files)}"
    )
    counter = SampleCounter()

    def loss_fn(logits, idx, epoch):
        counter.n += logits.shape[0]
        return methods.loss(method, options, logits, teacher.stats(idx, epoch))

    def eval_fn(model, epoch):
        return {"train_samples": counter.take(), **teacher.validate(model, epoch)}

    meta = {
        "role": "student",
        "task": task,
        "method": method,
        "options": options,
        **ts.info,
        "teacher_member_sha256": teacher.member_sha256,
    }
    return fit_and_save(
        model,
        ts.feed,
        loss_fn,
        cfg,
        seed=seed,
        ckpt=ckpt,
        out=out,
        fp_inputs={
            **ts.fp_inputs,
            "teacher": teacher.member_sha256,
            "code": code_fingerprint("distill", task),
        },
        meta=meta,
        eval_fn=eval_fn,
        device=device,
        log=log,
    )


def _extra(ap) -> None:
    ap.add_argument("--teacher", required=True, type=Path, help="the run's teacher artifact")
    ap.add_argument("--members", required=True, nargs="+", type=Path, help="the members' weights")


def main() -> None:
    training_cli(
        "Distil one student (rule distill)",
        "distill",
        lambda a, cfg, log: distill(
            a.task, a.data, a.teacher, a.members, cfg, a.seed, a.out, a.ckpt, a.num_classes, log
        ),
        extra_args=_extra,
    )


if __name__ == "__main__":
    main()
