"""The maths of ensemble distribution distillation, usable without the pipeline (public API).

For a researcher with a training loop of their own (Lightning, fairseq, timm): the ensemble's
sufficient statistics, the three distillation losses (and the forward-KL ablation), the
Proxy-Dirichlet target and the uncertainty measures. Formulas: ``docs/method.md``. Shapes:
``B`` examples (or tokens), ``M`` members, ``K`` classes.

=============================  =================================================================
``teacher_stats``              ``member_log_probs [B, M, K] -> TeacherStats`` (``pi_bar``,
                               ``l_bar``, RMI; float64), optionally tempered and smoothed
``TeacherStats``               the statistics; ``.index(idx)`` takes rows
``end_loss``                   EnD, ``KL[pi_bar || softmax(z)]``: ``(z [B, K], stats)``
``end2_loss``                  EnD2, the members' Dirichlet NLL: ``(z, stats, model_offset)``
``proxy_rkl_loss``             PD-EnD2, ``KL[Dir(alpha) || Dir(pi_bar beta_0 + 1)] / beta_0``:
                               ``(z, stats, model_offset, target_offset)``
``proxy_fkl_loss``             the forward-KL ablation, same arguments
``proxy_target``               ``beta = pi_bar beta_hat_0 + target_offset``, ``[B, K]``
``proxy_precision``            ``beta_hat_0 = (K - 1) / (2 RMI + eps)``, ``[B]``
``student_alphas``             ``alpha = exp(z) + offset``, ``[B, K]``
``ensemble_uncertainty``       ``member_probs [B, M, K] -> {total, data, knowledge, epkl, rmi,
                               confidence}``, each ``[B]``
``dirichlet_uncertainty``      ``alphas [B, K] ->`` the same measures in closed form
``categorical_uncertainty``    ``probs [B, K] ->`` the same (MI = EPKL = RMI = 0)
=============================  =================================================================

Every loss takes its options explicitly (the defaults of the pipeline's methods live in one
place, :mod:`pipeline.methods`: EnD2 ``model_offset`` 0; PD-EnD2 ``model_offset`` and
``target_offset`` 1), computes in float64, returns a scalar (``reduction="mean"``/``"sum"``) or
``[B]`` (``"none"``), and back-propagates into the logits' own dtype.

The names are loaded on first use (``from pipeline.maths import end2_loss``), so importing one
submodule (``pipeline.maths.metrics``) does not import the losses' kernels.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and editors; at run time see __getattr__
    from pipeline.maths.dirichlet import student_alphas
    from pipeline.maths.losses import end2_loss, end_loss, proxy_fkl_loss, proxy_rkl_loss
    from pipeline.maths.stats import TeacherStats, proxy_precision, proxy_target, teacher_stats
    from pipeline.maths.uncertainty import (
        categorical_uncertainty,
        dirichlet_uncertainty,
        ensemble_uncertainty,
    )

_PUBLIC = {
    "teacher_stats": "stats",
    "TeacherStats": "stats",
    "proxy_precision": "stats",
    "proxy_target": "stats",
    "end_loss": "losses",
    "end2_loss": "losses",
    "proxy_rkl_loss": "losses",
    "proxy_fkl_loss": "losses",
    "student_alphas": "dirichlet",
    "ensemble_uncertainty": "uncertainty",
    "dirichlet_uncertainty": "uncertainty",
    "categorical_uncertainty": "uncertainty",
}
__all__ = [
    "TeacherStats",
    "categorical_uncertainty",
    "dirichlet_uncertainty",
    "end2_loss",
    "end_loss",
    "ensemble_uncertainty",
    "proxy_fkl_loss",
    "proxy_precision",
    "proxy_rkl_loss",
    "proxy_target",
    "student_alphas",
    "teacher_stats",
]
assert sorted(__all__) == sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
