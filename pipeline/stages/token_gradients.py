"""Stage ``token_gradients`` (``rule token_gradients``, token task): the gradient diagnostic of
``docs/method.md`` on real data. On validation tokens, with the real members as the teacher and
each method group's trained student (seed 0 at V = ``gradient_analysis.token_vocab``):

* ``token_profile.csv``: mean ``|dL/dz_c|`` against the rank of ``pi_bar_c`` in that token
  (1 = the ensemble's top class), per group, with the mean ``pi_bar`` at that rank. The loss is
  the group's own (its method and options), summed over tokens, so the magnitudes are those its
  optimiser sees (divided by the number of tokens).
* ``token_gate.csv``: per group, the share of tokens whose ensemble top class has a student logit
  below 0 (there the offset gate ``e^z psi'(1 + e^z)`` of an ``m_off = 1`` student is below
  0.64), the share of ``sum_c |dL/dz_c|`` on head classes (``pi_bar_c >= 1e-3``), and the mean
  student logit of the top class.

Run by hand::

    python -m pipeline.stages.token_gradients --data results/text/data --num-classes 5000 \
        --teacher results/text/V5000/teacher --members m0.safetensors m1.safetensors \
        --students end=results/text/V5000/students/end/seed0/model.safetensors ... --out dir
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import methods
from pipeline.io import ArtifactError, atomic_write_text, reported
from pipeline.maths.stats import online_teacher_stats
from pipeline.stages.gradient_analysis import HEAD_THRESHOLD

SENTENCES = 200
"""Validation sentences the diagnostic reads (``gradient_analysis.token_sentences``)."""
BATCH = 16


def diagnose(group: str, model, meta: dict, members, val: dict) -> tuple[np.ndarray, dict]:
    """``(mean |dL/dz| per rank [V], gate row)`` of one student on the val sequences ``val``."""
    from pipeline.tasks.text.model import member_logits, trim

    method, options = meta["method"], meta.get("options", {})
    temperature, smoothing = methods.member_transform(method, options, 0)
    need_floored = methods.get(method).needs_floored
    vocab = int(meta["vocab_size"])
    profile = torch.zeros(vocab, dtype=torch.float64)
    prob = torch.zeros(vocab, dtype=torch.float64)
    tokens, below, head, total, top_logit = 0, 0, 0.0, 0.0, 0.0
    model.eval()
    n = val["inputs"].shape[0]
    for i in range(0, n, BATCH):
        x = trim(val["inputs"][i : i + BATCH])
        stats = online_teacher_stats(
            member_logits(members, x),
            temperature=temperature,
            smoothing=smoothing,
            need_floored=need_floored,
        )
        with torch.enable_grad():
            z = model(x).detach().double().requires_grad_(True)
            methods.loss(method, options, z, stats, reduction="sum").backward()
        g = z.grad.abs()
        pbar = stats.mean_probs.double()
        order = torch.argsort(pbar, dim=-1, descending=True)
        profile += g.gather(1, order).sum(0)
        prob += pbar.gather(1, order).sum(0)
        top = order[:, 0]
        zt = z.detach().gather(1, top[:, None])[:, 0]
        below += int((zt < 0).sum())
        top_logit += float(zt.sum())
        head += float((g * (pbar >= HEAD_THRESHOLD)).sum())
        total += float(g.sum())
        tokens += z.shape[0]
    row = {
        "group": group,
        "method": method,
        "model_offset": methods.model_offset(method, options),
        "tokens": tokens,
        "top_class_below_zero": below / tokens,
        "head_share": head / total if total > 0 else float("nan"),
        "mean_top_logit": top_logit / tokens,
    }
    return (profile / tokens).numpy(), {**row, "_prob": (prob / tokens).numpy()}


def run(data_dir, vocab: int, teacher_dir, member_files, students: dict[str, Path], sentences):
    """Both tables for ``students`` (``group -> weights``)."""
    from pipeline.tasks.text import corpus as TD
    from pipeline.tasks.text.model import load_lm, load_members
    from pipeline.tasks.text.teacher import check_manifest

    check_manifest(Path(teacher_dir), vocab, [Path(p) for p in member_files])
    members = load_members(member_files, vocab, torch.device("cpu"))
    val = TD.load_sequences(data_dir, "val", vocab)
    val = {k: v[:sentences] for k, v in val.items()}
    profiles, rows = {}, []
    for group, path in students.items():
        model, meta = load_lm(path)
        if meta.get("group", meta.get("method")) != group:
            held = meta.get("group", meta.get("method"))
            raise ArtifactError(path, f"holds a {held} student, not {group}")
        if int(meta["vocab_size"]) != vocab:
            raise ArtifactError(path, f"is a V={meta['vocab_size']} student, not V={vocab}")
        profile, row = diagnose(group, model, meta, members, val)
        prob = row.pop("_prob")
        profiles[group] = profile
        rows.append(row)
    table = pd.DataFrame({"rank": np.arange(1, vocab + 1), "mean_prob": prob, **profiles})
    return table, pd.DataFrame(rows)


def _student(spec: str) -> tuple[str, Path]:
    group, _, path = spec.partition("=")
    if not path:
        raise argparse.ArgumentTypeError(f"--students takes group=path, got {spec!r}")
    return group, Path(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
        torch.set_num_threads(args.threads)
    profile, gate = run(
        args.data, args.num_classes, args.teacher, args.members, dict(args.students), args.sentences
    )
    atomic_write_text(profile.to_csv(index=False), args.out / "token_profile.csv")
    atomic_write_text(gate.to_csv(index=False), args.out / "token_gate.csv")
    print(gate.to_markdown(index=False))


if __name__ == "__main__":
    with reported():
        main()
