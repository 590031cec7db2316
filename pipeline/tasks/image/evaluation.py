"""The image task's evaluation of one system (``rule evaluate``): point predictions and
uncertainty scores per example, then the metrics.

Systems: ``member-<seed>`` (one ensemble member), ``ensemble`` (read from the teacher cache: no
member is re-run), ``<method>-seed<seed>`` (a student, run over the prepared splits).
Point prediction: softmax(z) for a student, pi_bar for the ensemble. Uncertainty measures
(:mod:`pipeline.maths.uncertainty`): ensemble measures for the ensemble, Dirichlet measures of
``alpha = exp(z) + m_off`` for Dirichlet students (their training offset), categorical ones
(TU = DU, MI = EPKL = RMI = 0) for single members and EnD students. ``confidence`` is the max of
the point prediction in every case (the quantity ECE calibrates).

Metrics: test accuracy, NLL, Brier, ECE, PRR per score; per labelled shift set accuracy, NLL,
ECE; OOD ROC-AUC / PR-AUC of every score (test vs each OOD or shift set, OOD positive); per
corruption and severity accuracy, ECE, NLL and shift-as-OOD ROC-AUC. Diversity, on test and
every OOD / shift set (the shift set per severity): ``mean_rmi`` (mean RMI score) of every
system and, for the ensemble, ``disagreement`` (mean pairwise disagreement of its members' top
classes, :func:`pipeline.maths.metrics.pairwise_disagreement`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline import methods
from pipeline.maths import metrics as Mx
from pipeline.maths.dirichlet import student_alphas
from pipeline.maths.uncertainty import (
    SCORES,
    categorical_uncertainty,
    dirichlet_uncertainty,
    ensemble_uncertainty,
    scores,
)
from pipeline.progress import JOB, Progress
from pipeline.tasks.image import cache as C
from pipeline.tasks.image import data as D
from pipeline.tasks.image.batches import predict_logits


def _measure(raw: torch.Tensor, group: str, m_off: float, mask: list[int] | None) -> dict:
    """``probs`` and uncertainty ``scores`` from member log-probs ``[N, M, K]`` (single member
    or ensemble) or student logits ``[N, K]``, restricted to the classes in ``mask`` (their
    distribution renormalised over them) when given; the ensemble's also has ``member_pred``
    ``[N, M]``, each member's top class."""
    if mask is not None:
        raw = raw[..., mask]
    if group in ("member", "ensemble"):
        members = torch.softmax(raw, -1)  # [N, M, K]
        probs = members.mean(1)
        if group == "ensemble":
            out = {"probs": probs, "scores": scores(ensemble_uncertainty(members))}
            return out | {"member_pred": raw.argmax(-1)}  # [N, M]
        u = categorical_uncertainty(probs)
    else:
        probs = torch.softmax(raw, -1)
        if not methods.get(group).dirichlet:
            u = categorical_uncertainty(probs)
        else:
            u = dirichlet_uncertainty(student_alphas(raw, m_off))
            u["confidence"] = probs.amax(-1)
    return {"probs": probs, "scores": scores(u)}


def predictions(
    group: str,
    seed: int | None,
    data_dir: Path,
    cache_dir: Path,
    model,
    meta: dict | None,
    device: torch.device,
    splits: list[str],
    masks: dict[str, list[int] | None] | None = None,
) -> dict[str, dict]:
    """Per split: ``probs [N, K]`` (float64) and the uncertainty ``scores`` (``[N]`` each).

    Members and the ensemble come from the teacher cache; students are run. A split with a
    class mask (ImageNet-A/-R/-O: 200 of 1000 classes) is scored on those classes only, and an
    OOD split's in-distribution reference ``test@<split>`` under the same mask."""
    manifest = C.validate(cache_dir, data_dir)
    masks = masks or {}
    raw, m_off = {}, 0.0
    if model is not None:
        group = meta["method"]  # a student is measured as its registered method reads it
        m_off = methods.model_offset(group, meta["options"])
        workers = int(meta["config"].get("workers", 0))
    progress = None
    if model is not None:  # members and the ensemble are read from the cache: nothing to count
        sizes = D.load_manifest(data_dir)["splits"]
        total = sum(int(sizes[s]["n"]) for s in splits)
        progress = Progress(total, f"{JOB.name} (images)", unit="img")
    for split in splits:
        if model is None:
            c = C.load_split(cache_dir, split)
            if "member_log_probs" not in c:
                raise ValueError(f"teacher cache split {split!r} has no member log-probs")
            lp = c["member_log_probs"].double()  # [N, M, K]
            if group == "member":
                lp = lp[:, [manifest["member_seeds"].index(seed)]]
            raw[split] = lp
        else:
            images = D.load_split(data_dir, split)["images"]
            logits = predict_logits(model, images, device, workers=workers, progress=progress)
            raw[split] = logits.double()
    out = {s: _measure(raw[s], group, m_off, masks.get(s)) for s in splits}
    for s in splits:
        if s.startswith("ood_") and masks.get(s) is not None:
            out[f"test@{s}"] = _measure(raw["test"], group, m_off, masks[s])
    return out


TINY = float(np.finfo(np.float64).tiny)
STORED = torch.float32
"""The precision of the per-example scores and probabilities ``per_example.safetensors``
keeps; every metric is computed from the values at this precision, so that the stored arrays
reproduce it exactly (a score constant at this precision is a tie: ROC-AUC 0.5, PRR 0)."""


def stored_arrays(preds: dict[str, dict], labels: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The per-example arrays of every split ``s`` of ``preds`` (and of the masked test
    references ``test@<ood split>``, scores only):

    * ``s.pred`` (top class of the float64 point prediction), ``s.label``;
    * ``s.log_p_label``: ln of the label's probability, floored at the smallest float64;
    * every uncertainty score ``s.<measure>`` (``neg_confidence``: minus the top probability);
    * ``s.member_pred`` ``[N, M]`` for the ensemble; ``test.probs`` ``[N, K]``.

    Scores, probabilities and log-likelihoods are kept in :data:`STORED` precision."""
    arrays: dict[str, torch.Tensor] = {}
    for split, pr in preds.items():
        probs = pr["probs"]
        if split in labels:  # not the masked test references (OOD scores only)
            y = torch.from_numpy(np.asarray(labels[split], dtype=np.int64))
            arrays[f"{split}.pred"] = probs.argmax(1)
            arrays[f"{split}.label"] = y
            p_label = probs.gather(1, y[:, None])[:, 0].double().clamp_min(TINY)
            arrays[f"{split}.log_p_label"] = torch.log(p_label).to(STORED)
        for name, v in pr["scores"].items():
            arrays[f"{split}.{name}"] = v.to(STORED)
        if "member_pred" in pr:
            arrays[f"{split}.member_pred"] = pr["member_pred"]
    arrays["test.probs"] = preds["test"]["probs"].to(STORED)
    return arrays


def evaluate_system(
    group: str,
    seed: int | None,
    data_dir: Path,
    teacher_dir: Path,
    model,
    meta: dict | None,
    cfg: dict,
    device: torch.device | None = None,
) -> tuple[list[dict], dict[str, torch.Tensor], dict]:
    """Tidy metric rows (split, metric, measure, corruption, severity, value) and per-example
    arrays of one system; members and the ensemble from the teacher cache, a student ``model``
    run over the prepared splits. ``cfg``: the ``evaluation`` config slice (``ece_bins``)."""
    device = device or torch.device("cpu")
    ece_bins = int(cfg.get("ece_bins", Mx.ECE_BINS))
    data_manifest = D.load_manifest(data_dir)
    splits = [s for s in data_manifest["splits"] if s not in ("train", "val")]
    masks = {s: data_manifest["splits"][s].get("class_mask") for s in splits}
    preds = predictions(group, seed, data_dir, teacher_dir, model, meta, device, splits, masks)
    rows: list[dict] = []

    def add(split, metric, value, measure="", corruption="", severity=0):
        rows.append(
            {
                "split": split,
                "metric": metric,
                "measure": measure,
                "corruption": corruption,
                "severity": severity,
                "value": float(value),
            }
        )

    labels = {}
    shift_split = None
    for s in splits:
        loaded = D.load_split(data_dir, s)
        if s == "shift":
            shift_split = loaded  # its corruption and severity columns are used below
        y = loaded["labels"].numpy()
        if masks[s] is not None:  # labels index the masked (renormalised) classes
            y = np.searchsorted(np.asarray(masks[s]), y)
        labels[s] = y
    arrays = stored_arrays(preds, labels)
    # every metric below reads ``arrays``, exactly what per_example.safetensors keeps
    a = {k: v.numpy() for k, v in arrays.items()}

    def correct(split):
        return a[f"{split}.pred"] == a[f"{split}.label"]

    def quality(split, rows_of=slice(None)) -> dict[str, float]:
        """Accuracy, NLL and ECE of a split (its rows ``rows_of``)."""
        ok = correct(split)[rows_of]
        confidence = -a[f"{split}.neg_confidence"][rows_of].astype(np.float64)
        return {
            "accuracy": ok.mean(),
            "nll": -a[f"{split}.log_p_label"][rows_of].astype(np.float64).mean(),
            "ece": Mx.calibration_error(confidence, ok, ece_bins),
        }

    def score(split, name):
        return a[f"{split}.{name}"].astype(np.float64)

    # in-distribution test set
    q = quality("test")
    q["brier"] = Mx.brier(a["test.probs"].astype(np.float64), a["test.label"])
    for metric in ("accuracy", "nll", "brier", "ece"):
        add("test", metric, q[metric])
    errors = ~correct("test")
    for name in SCORES:
        add("test", "prr", Mx.prr(score("test", name), errors), measure=name)
    # labelled shift sets (e.g. ImageNet-A/-R): accuracy and calibration on them
    for split in splits:
        if split.startswith("shift_"):
            q = quality(split)
            for metric in ("accuracy", "nll", "ece"):
                add(split, metric, q[metric])
    # OOD detection: ID test (under the OOD set's class mask, if any) vs each OOD or labelled
    # shift set, OOD positive
    for split in splits:
        if split.startswith(("ood_", "shift_")):
            ref = f"test@{split}" if f"test@{split}" in preds else "test"
            for name in SCORES:
                s_in, s_out = score(ref, name), score(split, name)
                add(split, "ood_auroc", Mx.ood_auroc(s_in, s_out), measure=name)
                add(split, "ood_aupr", Mx.ood_aupr(s_in, s_out), measure=name)
    # diversity: mean RMI of every system, members' pairwise disagreement for the ensemble
    severity = shift_split["severity"].numpy() if shift_split is not None else None
    for split in splits:
        if split != "test" and not split.startswith(("ood_", "shift")):
            continue
        parts = [(slice(None), 0)]
        if split == "shift":
            parts = [(severity == s, int(s)) for s in np.unique(severity)]
        for rows_of, sev_ in parts:
            rmi = score(split, "rmi")[rows_of]
            add(split, "mean_rmi", rmi.mean(), corruption="all" if sev_ else "", severity=sev_)
            if f"{split}.member_pred" in a and a[f"{split}.member_pred"].shape[1] > 1:
                mp = a[f"{split}.member_pred"][rows_of]
                add(
                    split,
                    "disagreement",
                    Mx.pairwise_disagreement(mp),
                    corruption="all" if sev_ else "",
                    severity=sev_,
                )
    # shifted sets: per corruption and severity, and per severity over all corruptions
    if shift_split is not None:
        corr, sev = shift_split["corruption"].numpy(), severity
        names = data_manifest["corruptions"]
        for s in np.unique(sev):
            for ci in [None, *np.unique(corr)]:
                mask = (sev == s) & (True if ci is None else corr == ci)
                cname = "all" if ci is None else names[int(ci)]
                q = quality("shift", mask)
                for metric in ("accuracy", "ece", "nll"):
                    add("shift", metric, q[metric], corruption=cname, severity=int(s))
            # shift as OOD: clean test vs this severity (all corruptions), per measure
            for name in SCORES:
                add(
                    "shift",
                    "ood_auroc",
                    Mx.ood_auroc(score("test", name), score("shift", name)[sev == s]),
                    measure=name,
                    corruption="all",
                    severity=int(s),
                )
    return rows, arrays, {}
