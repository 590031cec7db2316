"""The learning curve of a sequence task's student (``TeacherSource.curve``): what it is compared
with is computed once per job from the members (:func:`ensemble_view`, one entry per batch of
validation tokens), and a point is one student pass over those batches (:func:`curve_point`).
Shapes: ``T`` tokens of a batch, ``V`` classes, ``M`` members. Elementwise float32, sums
float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["curve_point", "ensemble_view"]


@torch.no_grad()
def ensemble_view(x: Tensor, y: Tensor, member_logits: list[Tensor]) -> dict[str, Tensor]:
    """One batch as the curve reads it: the student's input ``x``, targets ``y [T]``, the
    ensemble's ``pbar [T, V]`` (float32), its top-1 ``top [T]``, its log-prob of the target
    ``ens_logp_y [T]`` (float64, from the members' log-softmax) and the members' agreement with
    its top-1 ``member_agree [T]``, from the ``M`` members' logits ``[T, V]``."""
    z = member_logits
    pbar = sum(torch.softmax(zj, -1) for zj in z) / len(z)
    top = pbar.argmax(-1)
    lp_y = torch.stack([torch.log_softmax(zj, -1)[torch.arange(len(y)), y] for zj in z])
    return {
        "x": x,
        "y": y,
        "pbar": pbar,
        "top": top,
        "ens_logp_y": torch.logsumexp(lp_y.double(), 0) - math.log(len(z)),
        "member_agree": sum((zj.argmax(-1) == top).double() for zj in z) / len(z),
    }


@torch.no_grad()
def curve_point(model, views: Iterable[dict[str, Tensor]]) -> dict[str, float]:
    """One learning-curve point: top-1 agreement with the ensemble, the NLL gap to the ensemble
    (student NLL - ensemble NLL of the tokens) and the mean KL(pi_bar || softmax z), all from the
    student's point prediction softmax(z) as the evaluation reads it (for a Dirichlet student too:
    ``docs/method.md``, "Student"); plus the members' mean agreement with the ensemble, the
    convergence criterion's bar."""
    agree, gap, kl, members, count = 0, 0.0, 0.0, 0.0, 0
    for b in views:
        logp = torch.log_softmax(model(b["x"]).float(), -1)
        pbar, y = b["pbar"], b["y"][:, None]
        agree += int((logp.argmax(-1) == b["top"]).sum())
        gap += float((b["ens_logp_y"] - logp.gather(1, y)[:, 0].double()).sum())
        kl += float((torch.xlogy(pbar, pbar) - pbar * logp).sum(dtype=torch.float64))
        members += float(b["member_agree"].sum())
        count += len(b["y"])
    return {
        "val_agreement": agree / count,
        "val_nll_gap": gap / count,
        "val_kl": kl / count,
        "member_agreement": members / count,
    }
