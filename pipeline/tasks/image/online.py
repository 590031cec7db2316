"""The image task's online teacher (``teacher.mode: online``): the members run on the student's
own batch, as the official ImageNet code does (``get_ensemble_preds`` on the training batch).

With augmenting students (``students.augment``) a cached teacher answers for the un-augmented
image while the student sees a crop or a flip of it; the online teacher answers for exactly the
view the student is trained on (the engine hands :meth:`OnlineTeacher.stats` the student's input
of the step). In a data-parallel job every rank runs the members on its own share of the global
batch, like the student. Validation and the learning-rate choice read the val split of the
teacher cache (the val images are not augmented: there the two agree).
"""

from __future__ import annotations

import torch

from pipeline import methods
from pipeline.maths.stats import teacher_stats
from pipeline.tasks.image.cache import CachedTeacher
from pipeline.tasks.image.models import load_trained

__all__ = ["OnlineTeacher"]


class OnlineTeacher(CachedTeacher):
    """What an image student learns from when the members run online.

    Args:
        cache_dir, data_dir, member_files, val, method, options, device, workers: as
            :class:`pipeline.tasks.image.cache.CachedTeacher` (the cache is read for the val
            split only; its train split need not exist).
        amp: run the members under bfloat16 autocast (where the students train with AMP); the
            statistics are formed in float64 from their float32-cast logits either way.
    """

    def __init__(
        self, cache_dir, data_dir, member_files, val, method, options, device, workers=0, amp=False
    ):
        self.amp = bool(amp)
        super().__init__(cache_dir, data_dir, member_files, val, method, options, device, workers)

    def _train_source(self, cache_dir, member_files) -> None:
        """The members themselves (checked equal to the cache's by ``validate``), frozen, in
        eval mode: batch norm uses its running statistics, dropout is off."""
        self.members = []
        for path in member_files:
            model = load_trained(path)[0].to(self.device).eval()
            for p in model.parameters():
                p.requires_grad_(False)
            self.members.append(model)

    @torch.no_grad()
    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, M, K]`` float32 logits of the members on the float images ``x [B, C, H, W]``."""
        x = x.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return torch.stack([m(x).float() for m in self.members], 1)

    def stats(self, idx: torch.Tensor, progress: float, x: torch.Tensor | None = None):
        """The teacher statistics of the student's batch ``x`` (the view it was trained on) at
        ``progress`` (the EnD2 temperature clock), in float64 (:func:`teacher_stats`)."""
        if x is None:
            raise ValueError(
                "the online teacher needs the student's input batch x (the engine passes it)"
            )
        temperature, smoothing = methods.member_transform(self.method, self.options, progress)
        return teacher_stats(self.member_logits(x), temperature=temperature, smoothing=smoothing)
