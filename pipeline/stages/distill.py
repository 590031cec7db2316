"""Stage ``distill`` (``rule distill``): one student of a registered method
(:mod:`pipeline.methods`: EnD, EnD2, PD-EnD2, the forward-KL ablation), trained by the shared
engine on the task's training set against the task's teacher.

Every method of a run uses the same architecture, optimiser, schedule and budget (the
``students`` config slice); only the loss differs (and ``init_bias``, where a method group sets
it: :data:`pipeline.methods.STUDENT_OPTIONS`). With ``curve_every`` the stage also writes the
student's learning curve (``curve.csv``: the teacher's ``curve`` metrics every N steps). What
the student learns from is the task's ``student_teacher``: the image task reads its teacher
cache (no member is run), the token task runs the members online.

Run by hand (what the rule does)::

    python -m pipeline.stages.distill --task image --data results/default/data \
        --teacher results/default/teacher --members m0.safetensors m1.safetensors --seed 0 \
        --config-json '{"method": "pd_end2", "options": {}, ...}' --out s.safetensors --ckpt c.pt
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from pipeline import methods, tasks
from pipeline.imports import code_fingerprint
from pipeline.io import ArtifactError, read_json
from pipeline.training import count_parameters, fit_and_save, seeded_model, start, training_cli

LR_CHOICE_RULE = "lr_choice"  # writes the choice.json that --lr-from reads


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
    """Train one student with ``cfg["method"]`` and ``cfg["options"]`` (``cfg["group"]``: the
    variant's name, when it is one); returns the history."""
    method, options = cfg["method"], cfg.get("options", {})
    opts = methods.resolve_options(method, options)  # an unknown method or option stops here
    tasks.spec(task).check_students("students", cfg, opts["init_bias"])
    impl, device, ts = start(task, data_dir, cfg, num_classes)
    teacher = impl.student_teacher(teacher_dir, member_files, ts, method, options, device, cfg)
    model = seeded_model(impl, cfg, ts, seed)
    log(
        f"student method={method} options={options} seed={seed} {ts.about} "
        f"params={count_parameters(model)} device={device} teacher members={len(member_files)}"
    )
    if opts["init_bias"] == "log_marginal":
        bias = init_output_bias(model, teacher)
        log(f"output bias set to the ensemble's log class-marginal (max {bias.max():.3f})")
    curve_fn = teacher.curve if cfg.get("curve_every") else None

    def loss_fn(logits, idx, progress, x):
        return methods.loss(method, options, logits, teacher.stats(idx, progress, x))

    def eval_fn(model, epoch):
        return teacher.validate(model, epoch)

    meta = {
        "role": "student",
        "task": task,
        "method": method,
        **({"group": cfg["group"]} if "group" in cfg else {}),
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
        curve_fn=curve_fn,
    )


def init_output_bias(model: torch.nn.Module, teacher: tasks.TeacherSource) -> torch.Tensor:
    """Set the bias of ``model``'s output layer (its last ``nn.Linear``) to the teacher's
    ``log_marginal()`` ``[K]`` (a task whose spec declares ``log_marginal``): ln of the
    ensemble's mean pi_bar over training tokens, so the student starts out predicting the
    ensemble's class marginal. Returns the bias."""
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linear or linear[-1].bias is None:
        raise ValueError("init_bias: the student has no output layer with a bias")
    bias = teacher.log_marginal().to(linear[-1].bias)
    if bias.shape != linear[-1].bias.shape:
        raise ValueError(
            f"init_bias: marginal of shape {tuple(bias.shape)} for the output bias "
            f"{tuple(linear[-1].bias.shape)}"
        )
    with torch.no_grad():
        linear[-1].bias.copy_(bias)
    return bias


def read_choice(path: str | Path, group: str) -> float:
    """The learning rate ``rule lr_choice`` chose for ``group``; an :class:`ArtifactError` names
    a file that is not that group's choice."""
    info = read_json(Path(path), LR_CHOICE_RULE)
    if not isinstance(info, dict) or info.get("group") != group:
        got = info.get("group") if isinstance(info, dict) else None
        raise ArtifactError(
            path, f"is the learning-rate choice of {got!r}, not {group!r}", LR_CHOICE_RULE
        )
    lr = info.get("lr")
    if not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise ArtifactError(path, f"holds no positive learning rate (lr={lr!r})", LR_CHOICE_RULE)
    return float(lr)


def _extra(ap) -> None:
    ap.add_argument("--teacher", required=True, type=Path, help="the run's teacher artifact")
    ap.add_argument("--members", required=True, nargs="+", type=Path, help="the members' weights")
    ap.add_argument(
        "--lr-from", type=Path, default=None, help="the group's choice.json (rule lr_choice)"
    )


def _run(a, cfg: dict, log) -> list[dict]:
    if a.lr_from is not None:  # the learning rate chosen on validation replaces the config's
        cfg = {**cfg, "lr": read_choice(a.lr_from, cfg.get("group", cfg["method"]))}
        log(f"lr={cfg['lr']} (chosen on validation: {a.lr_from})")
    return distill(
        a.task, a.data, a.teacher, a.members, cfg, a.seed, a.out, a.ckpt, a.num_classes, log
    )


def main() -> None:
    training_cli("Distil one student (rule distill)", "distill", _run, extra_args=_extra)


if __name__ == "__main__":
    main()
