"""The translation task's online teacher: what a student learns from (``student_teacher``)."""

from __future__ import annotations

import torch

from pipeline import methods
from pipeline.curves import curve_point, ensemble_view
from pipeline.io import sha256_file
from pipeline.maths.stats import TeacherStats, online_teacher_stats
from pipeline.tasks.translation.batches import Pairs, token_eval
from pipeline.tasks.translation.model import load_members

__all__ = ["MARGINAL_PAIRS", "OnlineTeacher"]

MARGINAL_PAIRS = 2000
"""Training pairs the ensemble's class marginal is averaged over (``init_bias``)."""


class OnlineTeacher:
    """What a translation student learns from (``student_teacher``): on every batch the members
    run teacher-forced on the student's batch of pairs, and their logits become the teacher
    statistics (:func:`pipeline.maths.stats.online_teacher_stats`, so EnD2's temperature
    schedule re-tempers the exact member outputs).

    It reads nothing of the teacher artifact (``TaskSpec.students_read_teacher`` is false: a
    change of its decoding retrains no student); the evaluation checks that the student's
    members are the artifact's.

    Args:
        member_files: the members; train: the job's training pairs; val: validation pairs.
    """

    def __init__(self, member_files, vocab, train: Pairs, val: Pairs, method, options, device):
        self.member_sha256 = [sha256_file(p) for p in member_files]
        self.members = load_members(member_files, vocab, device)
        self.train, self.val, self.device = train, val, device
        self.method, self.options = method, options
        self.need_floored = methods.get(method).needs_floored
        self._cache = None

    @torch.no_grad()
    def member_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The members' float32 logits ``[R, V]`` on the packed batch ``x``."""
        return [m(x).float() for m in self.members]

    def stats(self, idx: torch.Tensor, progress: float, x=None) -> TeacherStats:
        """Teacher statistics of the target tokens of train pairs ``idx`` (logit-row order):
        the members run on the student's packed batch ``x`` (packed again from ``idx`` when
        not given)."""
        temperature, smoothing = methods.member_transform(self.method, self.options, progress)
        x = (self.train.packed(idx) if x is None else x).to(self.device)
        return online_teacher_stats(
            self.member_logits(x),
            temperature=temperature,
            smoothing=smoothing,
            need_floored=self.need_floored,
        )

    @torch.no_grad()
    def _val_cache(self, batch: int = 64) -> list[dict[str, torch.Tensor]]:
        """Per batch of val pairs: input, targets, the ensemble's ``pbar``, its top-1, its
        log-probability of the target and the members' agreement with its top-1 (computed once
        per job; the learning curve then runs the student alone)."""
        if self._cache is None:
            self._cache = []
            for i in range(0, len(self.val), batch):
                rows = range(i, min(i + batch, len(self.val)))
                x = self.val.packed(rows).to(self.device)
                y = self.val.targets(rows).to(self.device)
                self._cache.append(ensemble_view(x, y, self.member_logits(x)))
        return self._cache

    @torch.no_grad()
    def curve(self, model) -> dict[str, float]:
        """One learning-curve point on the val pairs: top-1 agreement with the ensemble, the NLL
        gap to it, the mean KL(pi_bar || softmax z), and the members' mean agreement."""
        return curve_point(model, self._val_cache())

    @torch.no_grad()
    def log_marginal(self, pairs: int = MARGINAL_PAIRS) -> torch.Tensor:
        """``[V]`` ln of the ensemble's mean pi_bar over the target tokens of the first
        ``pairs`` training pairs."""
        total, count = None, 0
        n = min(pairs, len(self.train))
        for i in range(0, n, 64):
            x = self.train.packed(range(i, min(i + 64, n))).to(self.device)
            pbar = sum(torch.softmax(z.double(), -1) for z in self.member_logits(x)) / len(
                self.members
            )
            total = pbar.sum(0) if total is None else total + pbar.sum(0)
            count += pbar.shape[0]
        return torch.log((total / count).clamp_min(1e-30)).float()

    def validate(self, model, epoch: int) -> dict[str, float]:
        """Token accuracy, NLL and top-1 agreement with the ensemble on the val pairs."""
        row = token_eval(model, self.val, self.device)
        with torch.no_grad():
            agree = sum(
                int((model(b["x"]).argmax(-1) == b["top"]).sum()) for b in self._val_cache()
            )
        row["val_agreement"] = agree / sum(len(b["y"]) for b in self._val_cache())
        return row
