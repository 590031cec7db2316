"""Stage ``token_gradients`` (``rule token_gradients``): the gradient diagnostic of
``docs/method.md`` on real data, for a task that declares it (``TaskSpec.gradient_diagnostic``;
the token task: :mod:`pipeline.tasks.text.gradients`). On validation tokens, with the real
members as the teacher and each method group's trained student (seed 0 at
V = ``gradient_analysis.token_vocab``) it writes:

* ``token_profile.csv``: mean ``|dL/dz_c|`` against the rank of ``pi_bar_c`` in that token, per
  group (columns ``rank``, ``mean_prob``, then one per group);
* ``token_gate.csv``: per group, the share of tokens whose ensemble top class has a student logit
  below 0, the head share of ``sum_c |dL/dz_c|`` and the mean student logit of the top class.

Run by hand::

    python -m pipeline.stages.token_gradients --task text --data results/text/data \
        --num-classes 5000 --teacher results/text/V5000/teacher \
        --members m0.safetensors m1.safetensors \
        --students end=results/text/V5000/students/end/seed0/model.safetensors ... --out dir
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import tasks
from pipeline.errors import ConfigError
from pipeline.io import atomic_write_text, reported

SENTENCES = 200
"""Validation sentences the diagnostic reads (``gradient_analysis.token_sentences``)."""


def run(task: str, data_dir, vocab: int, teacher_dir, member_files, students, sentences):
    """``(profile, gate)`` of ``students`` (``group -> weights``): the task's diagnostic."""
    if not tasks.spec(task).gradient_diagnostic:
        raise ConfigError("task", task, "a task with a real-data gradient diagnostic")
    impl = tasks.load(task)
    return impl.gradient_diagnostic(data_dir, vocab, teacher_dir, member_files, students, sentences)


def _student(spec: str) -> tuple[str, Path]:
    group, _, path = spec.partition("=")
    if not path:
        raise argparse.ArgumentTypeError(f"--students takes group=path, got {spec!r}")
    return group, Path(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, choices=sorted(tasks.TASKS))
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--num-classes", required=True, type=int)
    ap.add_argument("--teacher", required=True, type=Path)
    ap.add_argument("--members", required=True, nargs="+", type=Path)
    ap.add_argument("--students", required=True, nargs="+", type=_student)
    ap.add_argument("--sentences", type=int, default=SENTENCES)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    profile, gate = run(
        args.task,
        args.data,
        args.num_classes,
        args.teacher,
        args.members,
        dict(args.students),
        args.sentences,
    )
    atomic_write_text(profile.to_csv(index=False), args.out / "token_profile.csv")
    atomic_write_text(gate.to_csv(index=False), args.out / "token_gate.csv")
    print(gate.to_markdown(index=False))


if __name__ == "__main__":
    with reported():
        main()
