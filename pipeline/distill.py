"""Students (``rule distill``): EnD, EnD2, PD-EnD2 and the forward-KL ablation, from the cache.

Every method uses the same architecture, optimiser, schedule and budget (the ``students``
config slice); only the loss differs. Students read the teacher cache only — no member is run.

* ``end``      KL[pi_bar || softmax(z)]
* ``end2``     Dirichlet NLL of the members; options ``model_offset`` (0), ``smoothing``
               (central, gamma), ``temperature`` {initial, hold_epochs, anneal_epochs}: hold
               T = initial, then decay linearly to 1 (needs the cached train member log-probs)
* ``pd_end2``  KL[Dir(alpha) || Dir(pi_bar beta_0 + 1)] / beta_0; options ``model_offset``,
               ``target_offset``
* ``pd_fkl``   KL[Dir(beta) || Dir(alpha)]

Run by hand::

    python -m pipeline.distill --data results/data --teacher results/teacher --seed 0 \
        --config-json '{"method": "pd_end2", "options": {}, ...}' --out s.safetensors --ckpt c.pt
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from pipeline import data as D
from pipeline import dirichlet as Dir
from pipeline import metrics
from pipeline import teacher as T
from pipeline.models import build_model, count_parameters
from pipeline.train import fit_and_save, predict_logits, select_device, training_cli

METHODS = ("end", "end2", "pd_end2", "pd_fkl")


def temperature_at(epoch: int, schedule: dict | None) -> float:
    """EnD2 temperature for 0-based ``epoch``: ``initial`` for ``hold_epochs``, then linear to 1
    over ``anneal_epochs`` (reaching 1 at the last annealing epoch), then 1."""
    if not schedule:
        return 1.0
    t0 = float(schedule.get("initial", 1.0))
    hold, anneal = int(schedule.get("hold_epochs", 0)), int(schedule.get("anneal_epochs", 0))
    if epoch < hold:
        return t0
    if anneal <= 0:
        return 1.0
    frac = min(1.0, (epoch - hold + 1) / anneal)
    return t0 + (1.0 - t0) * frac


def needs_members(method: str, options: dict) -> bool:
    """EnD2 with temperature != 1 or smoothing needs per-member log-probs (not just pi_bar)."""
    if method != "end2":
        return False
    return (
        float(options.get("smoothing", 0.0)) > 0
        or temperature_at(0, options.get("temperature")) != 1.0
    )


def model_offset(method: str, options: dict) -> float:
    """The student's ``m_off`` for ``method``: ``options["model_offset"]``, else 0 for EnD2
    (the original recipe) and 1 for the proxy methods. Evaluation must use the same value."""
    return float(options.get("model_offset", 0.0 if method == "end2" else 1.0))


def method_loss(
    method: str, options: dict, logits: torch.Tensor, stats: Dir.TeacherStats
) -> torch.Tensor:
    """The batch-mean loss of ``method`` for student ``logits [b, K]`` and teacher ``stats``."""
    m_off = model_offset(method, options)
    t_off = float(options.get("target_offset", 1.0))
    if method == "end":
        return Dir.end_loss(logits, stats)
    if method == "end2":
        return Dir.end2_loss(logits, stats, model_offset=m_off)
    if method == "pd_end2":
        return Dir.proxy_rkl_loss(logits, stats, model_offset=m_off, target_offset=t_off)
    return Dir.proxy_fkl_loss(logits, stats, model_offset=m_off, target_offset=t_off)


def make_loss(
    method: str,
    options: dict,
    cache: dict[str, torch.Tensor],
    num_members: int,
    device: torch.device,
) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
    """``loss(logits [b, K], idx [b], epoch)`` for ``method``, reading the cached statistics."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    if needs_members(method, options) and "member_log_probs" not in cache:
        raise ValueError(
            "end2 with temperature annealing or smoothing needs the train member log-probs in "
            "the teacher cache: set teacher.store_train_members: true"
        )
    cache = {k: v.to(device) for k, v in cache.items()}

    def stats(idx: torch.Tensor, epoch: int) -> Dir.TeacherStats:
        if needs_members(method, options):
            return Dir.teacher_stats(
                cache["member_log_probs"][idx],
                temperature=temperature_at(epoch, options.get("temperature")),
                smoothing=float(options.get("smoothing", 0.0)),
            )
        return T.stats_from_cache(cache, num_members, idx)

    def loss(logits: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        return method_loss(method, options, logits, stats(idx.to(device), epoch))

    return loss


def distill(
    data_dir: str | Path,
    cache_dir: str | Path,
    cfg: dict,
    seed: int,
    out: str | Path,
    ckpt: str | Path,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Train one student with ``cfg["method"]`` and ``cfg["options"]``; returns the history."""
    manifest = T.validate(cache_dir, data_dir)
    method, options = cfg["method"], cfg.get("options", {})
    train_images = D.load_split(data_dir, "train")["images"]
    cache_train = T.load_split(cache_dir, "train")
    cache_val = T.load_split(cache_dir, "val")
    val_images = D.load_split(data_dir, "val")["images"]
    k, m = int(manifest["num_classes"]), int(manifest["num_members"])
    in_ch = D.channels(train_images)
    torch.manual_seed(seed)
    model = build_model(cfg["model"], k, in_ch)
    device = select_device(cfg.get("device", "auto"))
    log(
        f"student method={method} options={options} seed={seed} params={count_parameters(model)}"
        f" device={device} teacher members={m}"
    )
    loss = make_loss(method, options, cache_train, m, device)
    workers = int(cfg.get("workers", 0))
    val_stats = T.stats_from_cache(cache_val, m)
    val_loss = make_loss(
        method,
        {**options, "temperature": None, "smoothing": 0.0},
        {k_: v for k_, v in cache_val.items() if k_ != "member_log_probs"},
        m,
        torch.device("cpu"),
    )

    def eval_fn(model, epoch):
        raw = predict_logits(model, val_images, device, workers=workers)  # student logits z
        p = torch.softmax(raw.double(), -1)  # point prediction softmax(z)
        y = cache_val["labels"]
        return {
            "val_acc": metrics.accuracy(p, y),
            "val_nll": metrics.nll(p, y),
            "val_agreement": float((p.argmax(1) == val_stats.mean_probs.argmax(1)).double().mean()),
            "val_loss": float(val_loss(raw, torch.arange(len(y)), 0)),  # T = 1, no smoothing
            "val_log_precision": float(torch.logsumexp(raw.double(), -1).mean()),  # ln sum exp z
        }

    meta = {
        "role": "student",
        "method": method,
        "options": options,
        "num_classes": k,
        "in_channels": in_ch,
        "teacher_member_sha256": manifest["member_sha256"],
    }
    fp_inputs = {"teacher": manifest["member_sha256"], "data": manifest["data_manifest"]}
    return fit_and_save(
        model,
        train_images,
        loss,
        cfg,
        seed=seed,
        ckpt=ckpt,
        out=out,
        fp_inputs=fp_inputs,
        meta=meta,
        eval_fn=eval_fn,
        device=device,
        log=log,
    )


def main() -> None:
    training_cli(
        "Distil one student (rule distill)",
        "distill",
        lambda a, cfg, log: distill(a.data, a.teacher, cfg, a.seed, a.out, a.ckpt, log=log),
        extra_args=lambda ap: ap.add_argument("--teacher", required=True, type=Path),
    )


if __name__ == "__main__":
    main()
