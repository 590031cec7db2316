"""The token task's evaluation of one system (``rule evaluate``).

Per token every system gives the log-probability of the target, its top-1 prediction and the six
uncertainty scores (:mod:`.tokens`; members and the ensemble read from the teacher cache, students
run). From them:

* test split, token level: accuracy, NLL, perplexity, top-1 agreement with the ensemble, PRR of
  every score for token errors; for members and the ensemble how confident they are (mean top
  probability, shares of tokens above 0.5 and 0.9);
* sequence level: each token score averaged over the sequence ("product of expectations") and
  the score ``seq_nll = -(1/L) ln P(y | x)``; OOD ROC-AUC / PR-AUC of each (OOD positive) for the
  test sequences against every ``ood_*`` split.

Metric rows: ``split, metric, measure, value`` (the stage adds ``system, group, seed, vocab``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline import methods
from pipeline.maths import metrics as Mx
from pipeline.maths.tokens import CONFIDENT, categorical_tokens, dirichlet_tokens
from pipeline.maths.uncertainty import SCORES
from pipeline.progress import JOB, Progress
from pipeline.tasks.text import corpus as TD
from pipeline.tasks.text.teacher import TAIL, batches, check_manifest, load_split

SEQ_SCORES = (*SCORES, "seq_nll")


@torch.no_grad()
def student_outputs(
    model, method: str, options: dict, seqs: dict, device: torch.device, batch: int = 32
) -> dict[str, torch.Tensor]:
    """Per-token outputs of a student: categorical or Dirichlet as its method reads it."""
    m_off = methods.model_offset(method, options)
    dirichlet = methods.get(method).dirichlet
    model.to(device)
    parts: dict[str, list] = {}
    progress = Progress(len(seqs["lengths"]), f"{JOB.name} (sequences)", unit="seq")
    for x, y in batches(seqs, batch):
        x, y = x.to(device), y.to(device)
        z = model(x)
        progress.update(x.shape[0])
        out = dirichlet_tokens(z, m_off, y) if dirichlet else categorical_tokens(z, y)
        for k, v in out.items():
            parts.setdefault(k, []).append(v.cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def sequence_scores(tok: dict[str, torch.Tensor], seq: torch.Tensor) -> dict[str, np.ndarray]:
    """Each token score averaged over its sequence, and ``seq_nll = -mean ln p(y_t)``."""
    seq = seq.long()
    n = int(seq.max()) + 1
    counts = torch.bincount(seq, minlength=n).double()
    out = {}
    for name in SCORES:
        out[name] = (torch.bincount(seq, tok[name].double(), minlength=n) / counts).numpy()
    out["seq_nll"] = (torch.bincount(seq, -tok["logp_y"].double(), minlength=n) / counts).numpy()
    return out


def evaluate_system(
    group: str,
    seed: int | None,
    data_dir: Path,
    teacher_dir: Path,
    model,
    meta: dict | None,
    cfg: dict,
    num_classes: int | None,
    device: torch.device | None = None,
) -> tuple[list[dict], dict[str, torch.Tensor], dict]:
    """Tidy metric rows and per-sequence scores of one system at V = ``num_classes``: members
    and the ensemble from the teacher cache, a student ``model`` run over the splits."""
    vocab = int(num_classes)
    device = device or torch.device("cpu")
    info = check_manifest(Path(teacher_dir), vocab, None)
    if model is not None and int(meta["vocab_size"]) != vocab:
        raise ValueError(f"the student has V={meta['vocab_size']}, expected {vocab}")
    rows, per_seq = [], {}

    def add(split, metric, value, measure=""):
        rows.append({"split": split, "metric": metric, "measure": measure, "value": float(value)})

    for split in info["splits"]:
        cache = load_split(Path(teacher_dir), split, info)
        key = f"member-{seed}" if group == "member" else "ensemble"
        if model is None and f"{key}.pred" not in cache:
            raise ValueError(f"teacher cache {teacher_dir} has no outputs of {key}")
        if model is None:
            tok = {k.split(".", 1)[1]: v for k, v in cache.items() if k.startswith(f"{key}.")}
        else:
            seqs = TD.load_sequences(data_dir, split, vocab)
            tok = student_outputs(model, meta["method"], meta["options"], seqs, device)
        y = cache["target"].long()
        if len(tok["pred"]) != len(y):
            raise ValueError(f"{split}: {len(tok['pred'])} token outputs for {len(y)} targets")
        seq = sequence_scores(tok, cache["seq"])
        per_seq.update({f"{split}.{k}": torch.from_numpy(v).float() for k, v in seq.items()})
        if split != "test":
            continue
        errors = (tok["pred"].long() != y).numpy()
        nll = float(-tok["logp_y"].double().mean())
        add(split, "accuracy", 1.0 - errors.mean())
        add(split, "nll", nll)
        add(split, "perplexity", np.exp(nll))
        add(split, "agreement", (tok["pred"] == cache["ensemble.pred"]).double().mean())
        if model is None:  # how confident the members and the ensemble are (the paper's regime)
            top = -tok["neg_confidence"].double()
            add(split, "top_prob", top.mean())
            for level in CONFIDENT:
                add(split, "confident_share", (top > level).double().mean(), f">{level}")
            if key == "ensemble":
                add(split, "tail_log_mean", cache[TAIL].double().mean())
        for name in SCORES:
            add(split, "prr", Mx.prr(tok[name].numpy(), errors), measure=name)
    for split in info["splits"]:
        if split.startswith("ood_"):
            for name in SEQ_SCORES:
                s_in, s_out = per_seq[f"test.{name}"].numpy(), per_seq[f"{split}.{name}"].numpy()
                add(split, "ood_auroc", Mx.ood_auroc(s_in, s_out), measure=name)
                add(split, "ood_aupr", Mx.ood_aupr(s_in, s_out), measure=name)
    return rows, per_seq, {"vocab": vocab}
