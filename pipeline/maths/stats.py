"""Teacher statistics: what every loss needs from the ensemble, and the Proxy-Dirichlet target.

Shapes: ``B`` examples (or tokens), ``M`` members, ``K`` classes. Every loss depends on the ensemble
only through ``pi_bar``, ``l_bar`` and the RMI (``docs/method.md``), so :class:`TeacherStats`
holds exactly those, in float64 (float32 from the online path). ``RMI`` is clamped at 0, so
agreeing members give ``beta_hat_0 = (K-1)/eps ~ 1e11``, finite.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from pipeline.maths import _kernels
from pipeline.maths.dirichlet import EPS, F64, LOG_PROB_FLOOR, check_matrix, check_positive

__all__ = [
    "ONLINE_BLOCK",
    "TeacherStats",
    "online_teacher_stats",
    "proxy_precision",
    "proxy_target",
    "teacher_stats",
]


@dataclass(frozen=True)
class TeacherStats:
    """Sufficient statistics of an ensemble's predictions for one batch.

    Every ``[B, K]`` tensor is float64, except from :func:`online_teacher_stats` (float32, the
    precision it computes in); ``rmi`` is always float64.

    Attributes:
        mean_probs: ``[B, K]`` float64, ``pi_bar = mean_m softmax(z_m / T)`` (rows sum to 1).
        mean_log_probs: ``[B, K]`` float64, ``l_bar = mean_m log_softmax(z_m / T)``, floored at
            ``LOG_PROB_FLOOR``.
        rmi: ``[B]`` float64, reverse mutual information ``sum_c pi_bar (ln pi_bar - l_bar)``,
            clamped ``>= 0``.
        num_members: ``M``.
        floored_mean_log_probs: ``[B, K]`` float64 ``mean_m ln(pi_m + eps)``, the target of the
            EnD2 likelihood (``None`` when only ``pi_bar``/``l_bar`` were cached).
        temperature: the ``T`` the members were tempered with.
        smoothing: the central-smoothing ``gamma`` applied to member probabilities.
    """

    mean_probs: Tensor
    mean_log_probs: Tensor
    rmi: Tensor
    num_members: int
    floored_mean_log_probs: Tensor | None = None
    temperature: float = 1.0
    smoothing: float = 0.0

    @property
    def batch_size(self) -> int:
        return int(self.mean_probs.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.mean_probs.shape[1])

    def index(self, idx: Tensor | slice) -> TeacherStats:
        """Rows ``idx`` of every per-example tensor (for mini-batching cached statistics)."""
        fl = self.floored_mean_log_probs
        return replace(
            self,
            mean_probs=self.mean_probs[idx],
            mean_log_probs=self.mean_log_probs[idx],
            rmi=self.rmi[idx],
            floored_mean_log_probs=None if fl is None else fl[idx],
        )

    def to(self, device: torch.device | str) -> TeacherStats:
        fl = self.floored_mean_log_probs
        return replace(
            self,
            mean_probs=self.mean_probs.to(device),
            mean_log_probs=self.mean_log_probs.to(device),
            rmi=self.rmi.to(device),
            floored_mean_log_probs=None if fl is None else fl.to(device),
        )

    @classmethod
    def from_cache(
        cls,
        mean_probs: Tensor,
        mean_log_probs: Tensor,
        num_members: int,
        *,
        floored_mean_log_probs: Tensor | None = None,
        rmi: Tensor | None = None,
        temperature: float = 1.0,
        smoothing: float = 0.0,
    ) -> TeacherStats:
        """Statistics from cached ``pi_bar``/``l_bar`` ``[B, K]`` (no member axis needed).

        Inputs may be half precision: they are cast to float64, ``pi_bar`` is re-normalised to
        sum to one and ``l_bar`` floored at ``LOG_PROB_FLOOR``. Pass the ``rmi [B]`` computed
        at caching time (in float64 from the members) when the cache is half precision:
        recomputing it from rounded ``pi_bar``/``l_bar`` loses its small values.
        """
        check_matrix("mean_probs", mean_probs)
        check_matrix("mean_log_probs", mean_log_probs)
        if mean_log_probs.shape != mean_probs.shape:
            raise ValueError(
                f"mean_log_probs has shape {tuple(mean_log_probs.shape)} but mean_probs has "
                f"shape {tuple(mean_probs.shape)}"
            )
        if floored_mean_log_probs is not None:
            check_matrix("floored_mean_log_probs", floored_mean_log_probs)
            if floored_mean_log_probs.shape != mean_probs.shape:
                raise ValueError(
                    f"floored_mean_log_probs has shape {tuple(floored_mean_log_probs.shape)} but "
                    f"mean_probs has shape {tuple(mean_probs.shape)}"
                )
            floored_mean_log_probs = floored_mean_log_probs.to(F64)
        if int(num_members) < 1:
            raise ValueError(f"num_members must be >= 1, got {num_members}")
        pbar = mean_probs.to(F64).clamp_min(0.0)
        total = pbar.sum(-1, keepdim=True)
        if bool((total <= 0).any()) or not bool(torch.isfinite(total).all()):
            raise ValueError("mean_probs has a row that does not sum to a positive finite number")
        pbar = pbar / total
        lbar = mean_log_probs.to(F64).clamp_min(LOG_PROB_FLOOR)
        if rmi is None:
            rmi = _rmi(pbar, lbar)
        elif rmi.shape != pbar.shape[:1]:
            raise ValueError(f"rmi has shape {tuple(rmi.shape)}, expected ({pbar.shape[0]},)")
        else:
            rmi = rmi.to(F64).clamp_min(0.0)
        return cls(
            mean_probs=pbar,
            mean_log_probs=lbar,
            rmi=rmi,
            num_members=int(num_members),
            floored_mean_log_probs=floored_mean_log_probs,
            temperature=check_positive("temperature", temperature),
            smoothing=float(smoothing),
        )


def _rmi(pbar: Tensor, lbar: Tensor) -> Tensor:
    """``sum_c pi_bar_c (ln pi_bar_c - l_bar_c)`` clamped ``>= 0``; ``0 ln 0 = 0``."""
    terms = torch.where(pbar > 0, pbar * (torch.log(pbar) - lbar), torch.zeros_like(pbar))
    return terms.sum(-1).clamp_min(0.0)


def teacher_stats(
    member_log_probs: Tensor, temperature: float = 1.0, smoothing: float = 0.0
) -> TeacherStats:
    """Ensemble statistics from member log-probabilities.

    Args:
        member_log_probs: ``[B, M, K]`` member log-probabilities at T = 1 (or logits: they are
            re-normalised with ``log_softmax(. / T)``, which is exactly re-tempering).
        temperature: ``T > 0``.
        smoothing: central smoothing ``gamma in [0, 1)``: ``pi <- (1 - gamma) pi + gamma / K``.

    Returns:
        :class:`TeacherStats` in float64. Members are processed one at a time, so memory is
        ``O(B K)``, not ``O(B M K)``.
    """
    if not isinstance(member_log_probs, Tensor):
        raise TypeError(
            f"member_log_probs must be a torch.Tensor, got {type(member_log_probs).__name__}"
        )
    if member_log_probs.ndim != 3:
        raise ValueError(
            f"member_log_probs must have shape [B, M, K], got shape {tuple(member_log_probs.shape)}"
        )
    b, m, k = member_log_probs.shape
    if b < 1 or m < 1 or k < 2:
        raise ValueError(f"member_log_probs needs B >= 1, M >= 1, K >= 2, got shape {(b, m, k)}")
    if not member_log_probs.is_floating_point():
        raise ValueError(f"member_log_probs must be floating point, got {member_log_probs.dtype}")
    temperature = check_positive("temperature", temperature)
    smoothing = check_positive("smoothing", smoothing, allow_zero=True)
    if smoothing >= 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")

    pbar = torch.zeros(b, k, dtype=F64, device=member_log_probs.device)
    lbar = torch.zeros_like(pbar)
    floored = torch.zeros_like(pbar)
    for j in range(m):
        lp = member_log_probs[:, j].to(F64)
        if temperature != 1.0:
            lp = lp / temperature
        lp = torch.log_softmax(lp, dim=-1).clamp_min_(LOG_PROB_FLOOR)
        p = lp.exp()
        if smoothing > 0.0:
            p.mul_(1.0 - smoothing).add_(smoothing / k)
            lp = torch.log(p)
        pbar += p
        lbar += lp
        floored += torch.log(p + EPS)
    pbar /= m
    lbar /= m
    floored /= m
    return TeacherStats(
        mean_probs=pbar,
        mean_log_probs=lbar,
        rmi=_rmi(pbar, lbar),
        num_members=m,
        floored_mean_log_probs=floored,
        temperature=temperature,
        smoothing=smoothing,
    )


ONLINE_BLOCK = 1 << 18
""":func:`online_teacher_stats` works on blocks of about this many logits per member (1 MiB)."""


def online_teacher_stats(
    member_logits: Tensor | list[Tensor],
    temperature: float = 1.0,
    smoothing: float = 0.0,
    *,
    need_floored: bool = True,
) -> TeacherStats:
    """:func:`teacher_stats` for members run during training (token-level students, large K).

    Same statistics, computed for speed in float32 (the precision of the member logits
    themselves) and **returned in float32** (``pi_bar`` renormalised to sum to 1 up to float32
    rounding; widening them would add no digits, only memory: the float32 gradient kernels read
    them as they are and the float64 kernels widen them on the steps that run): each member's
    ``log_softmax(z / T)``, ``exp`` and ``ln(pi + eps)`` and their sums over members; the RMI
    terms summed in float64 (``rmi`` is float64). Where the loss backend is compiled for this
    many logits (:func:`pipeline.maths.losses.loss_backend`) the whole computation is one
    ``torch.compile``d function (:func:`_online_core`: each member's logits read once); otherwise
    it runs eagerly, in place, over row blocks small enough to stay in cache. On a CPU, float64
    ``exp``/``log`` are ~10x slower than float32, and the float64 :func:`teacher_stats` cost more
    than the student's own step at K = 5,000; this path is several times faster.
    Against it, the differences are O(1e-6) relative in ``pi_bar`` and O(1e-6) absolute in
    ``l_bar`` and the RMI (pinned in ``tests/maths/test_stats.py``).

    Args:
        member_logits: ``[B, M, K]`` logits or log-probs, or a list of ``M`` ``[B, K]`` tensors.
        temperature, smoothing: as :func:`teacher_stats`.
        need_floored: also form ``floored_mean_log_probs`` (only EnD2 reads it).
    """
    if isinstance(member_logits, Tensor):
        if member_logits.ndim != 3:
            raise ValueError(
                f"member_logits must have shape [B, M, K], got {tuple(member_logits.shape)}"
            )
        members = list(member_logits.unbind(1))
    else:
        members = list(member_logits)
    if not members or any(not isinstance(z, Tensor) or z.ndim != 2 for z in members):
        raise ValueError("member_logits must be a [B, M, K] tensor or a list of [B, K] tensors")
    b, k = members[0].shape
    if k < 2 or any(z.shape != (b, k) for z in members):
        shapes = [tuple(z.shape) for z in members]
        raise ValueError(f"every member needs the same [B, K >= 2] shape, got {shapes}")
    temperature = check_positive("temperature", temperature)
    smoothing = check_positive("smoothing", smoothing, allow_zero=True)
    if smoothing >= 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    m = len(members)
    out = _online_compiled(members, temperature, smoothing, need_floored)
    if out is None:
        out = _online_eager(members, temperature, smoothing, need_floored)
    pbar, lbar, rmi, floored = out
    return TeacherStats(
        mean_probs=pbar,
        mean_log_probs=lbar,
        rmi=rmi,
        num_members=m,
        floored_mean_log_probs=floored,
        temperature=temperature,
        smoothing=smoothing,
    )


def _online_eager(members, temperature, smoothing, need_floored):
    """:func:`online_teacher_stats` over row blocks small enough to stay in cache."""
    (b, k), m, dev = members[0].shape, len(members), members[0].device
    pbar = torch.empty(b, k, dtype=torch.float32, device=dev)
    lbar, rmi = torch.empty_like(pbar), torch.empty(b, dtype=F64, device=dev)
    floored = torch.empty_like(pbar) if need_floored else None
    rows = max(1, ONLINE_BLOCK // k)
    for r in range(0, b, rows):  # row blocks small enough to stay in cache across the passes
        sl = slice(r, r + rows)
        p_sum = l_sum = f_sum = None
        for z in members:  # float32, in place
            u = z[sl].float()
            if temperature != 1.0:
                u = u / temperature
            u = torch.log_softmax(u, dim=-1)
            p = u.exp()
            if smoothing > 0.0:
                p.mul_(1.0 - smoothing).add_(smoothing / k)
                u = torch.log(p)
            p_sum = p if p_sum is None else p_sum.add_(p)
            l_sum = u if l_sum is None else l_sum.add_(u)
            if need_floored:
                f = torch.log(p + EPS)
                f_sum = f if f_sum is None else f_sum.add_(f)
        p_mean = p_sum.div_(m)
        lb = l_sum.div_(m).clamp_min_(LOG_PROB_FLOOR)
        terms = torch.where(p_mean > 0, p_mean * (torch.log(p_mean) - lb), 0.0)
        rmi[sl] = terms.sum(-1, dtype=F64).clamp_min(0.0)
        pbar[sl] = p_mean.mul_((1.0 / p_mean.sum(-1, keepdim=True, dtype=F64)).float())
        lbar[sl] = lb
        if floored is not None:
            floored[sl] = f_sum.div_(m)
    return pbar, lbar, rmi, floored


def _online_core(t: Tensor, gamma: Tensor, smooth: bool, need_floored: bool, *members: Tensor):
    """The statistics of :func:`_online_eager` as one function of tensor arithmetic, for
    ``torch.compile`` (one read of each member's logits, every pass fused)."""
    k, m = members[0].shape[-1], len(members)
    p_sum = l_sum = f_sum = None
    for z in members:
        u = z.to(torch.float32) / t.to(torch.float32)
        lp = u - torch.logsumexp(u, -1, keepdim=True)
        p = lp.exp()
        if smooth:
            g = gamma.to(torch.float32)
            p = p * (1.0 - g) + g / k
            lp = p.log()
        p_sum = p if p_sum is None else p_sum + p
        l_sum = lp if l_sum is None else l_sum + lp
        if need_floored:
            f = (p + EPS).log()
            f_sum = f if f_sum is None else f_sum + f
    p_mean = p_sum / m
    l_mean = (l_sum / m).clamp_min(LOG_PROB_FLOOR)
    terms = torch.where(p_mean > 0, p_mean * (p_mean.log() - l_mean), 0.0)
    rmi = terms.sum(-1, dtype=F64).clamp_min(0.0)
    pbar = p_mean * (1.0 / p_mean.sum(-1, keepdim=True, dtype=F64)).to(torch.float32)
    floored = f_sum / m if need_floored else None
    return pbar, l_mean, rmi, floored


def _online_compiled(members, temperature, smoothing, need_floored):
    """:func:`_online_core` compiled, where the loss backend is compiled for this many logits
    (:func:`pipeline.maths._kernels.loss_backend`); ``None`` otherwise or if compiling fails."""
    (b, k), m = members[0].shape, len(members)
    if _kernels.loss_backend(b * k * m) != "compiled":
        return None
    fn = _kernels._compiled("online_stats", _online_core)
    dev = members[0].device
    t = torch.tensor(temperature, dtype=F64, device=dev)
    gamma = torch.tensor(smoothing, dtype=F64, device=dev)
    try:
        return fn(t, gamma, smoothing > 0.0, need_floored, *members)
    except Exception as err:  # compiler missing or broken: as the losses, tell once, stay eager
        _kernels._compile_failure(err)
        return None


def proxy_precision(stats: TeacherStats) -> Tensor:
    """Minka's fixed-mean precision estimate ``beta_hat_0 = (K - 1) / (2 RMI + eps)``, ``[B]``."""
    return (stats.num_classes - 1) / (2.0 * stats.rmi + EPS)


def proxy_target(stats: TeacherStats, target_offset: float) -> Tensor:
    """Proxy-Dirichlet target ``beta = pi_bar * beta_hat_0 + t``, ``[B, K]`` float64."""
    t = check_positive("target_offset", target_offset, allow_zero=True)
    return stats.mean_probs * proxy_precision(stats)[:, None] + t
