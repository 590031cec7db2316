"""Student Dirichlet, teacher statistics, the Proxy-Dirichlet target and the distillation losses.

Formulas: ``../shared/method.md``. Shapes: ``B`` examples (or tokens), ``M`` ensemble members,
``K`` classes. Every loss takes student logits ``[B, K]`` of any floating dtype, computes in
float64 and returns float64 (``[B]`` for ``reduction="none"``, a scalar otherwise); the gradient
flows back in the logits' own dtype.

The four losses are :class:`torch.autograd.Function` s with closed-form gradients (method.md,
"the gradient analysis"): one float64 pass over ``[B, K]`` per special function, no autograd
graph through ``lgamma``/``digamma``, and the gradient is formed in the forward pass when (and
only when) it is needed. ``tests/test_dirichlet.py`` pins values to ``torch.distributions`` and
gradients to ``torch.autograd.gradcheck``.

Numerical guards (all documented, all tested at K = 40,000):

* student logits are clamped to ``[LOGIT_MIN, logit_max(K)]`` before ``exp`` so that
  ``alpha_0 <= finfo(float64).max / 2**30`` and every ``lgamma``/product stays finite;
  clamped entries get zero gradient;
* member log-probabilities are floored at ``LOG_PROB_FLOOR = ln(finfo(float64).tiny)``
  (a smaller probability is zero in float64 anyway);
* ``RMI`` is clamped at 0, so agreeing members give ``beta_hat_0 = (K-1)/eps ~ 1e11``, finite;
* gradients cast back to float16/bfloat16/float32 are saturated to that dtype's finite range.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from pipeline import special

__all__ = [
    "EPS",
    "LOGIT_MIN",
    "LOG_PROB_FLOOR",
    "TeacherStats",
    "dirichlet_entropy",
    "dirichlet_kl",
    "end2_loss",
    "end_loss",
    "logit_max",
    "loss_backend",
    "online_teacher_stats",
    "proxy_fkl_loss",
    "proxy_precision",
    "proxy_rkl_loss",
    "proxy_target",
    "student_alphas",
    "teacher_stats",
]

EPS = 1.1920929e-7
"""float32 machine epsilon: the floor inside ln(pi + eps) and the guard in beta_hat_0."""

LOG_PROB_FLOOR = math.log(torch.finfo(torch.float64).tiny)
"""ln of the smallest normal float64 (about -708.4): floor for member log-probabilities."""

LOGIT_MIN = -300.0
"""Student logits below this are clamped (exp(-300) ~ 5e-131 keeps digamma/trigamma finite)."""

_F64 = torch.float64
_LOG_F64_MAX = math.log(torch.finfo(_F64).max)
_HEADROOM = 30.0 * math.log(2.0)
_REDUCTIONS = ("mean", "sum", "none")


def logit_max(num_classes: int) -> float:
    """Largest student logit used in ``exp``: keeps ``alpha_0 <= finfo(float64).max / 2**30``."""
    return _LOG_F64_MAX - math.log(num_classes) - _HEADROOM


# ----------------------------------------------------------------------------- validation
def _check_matrix(name: str, t: object) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{name} must have shape [B, K], got shape {tuple(t.shape)}")
    if t.shape[0] < 1 or t.shape[1] < 2:
        raise ValueError(f"{name} needs B >= 1 rows and K >= 2 classes, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return t


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    value = float(value)
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value}")
    return value


def _reduce(per_example: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_example.mean()
    if reduction == "sum":
        return per_example.sum()
    if reduction == "none":
        return per_example
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


# ----------------------------------------------------------------------------- student
def _exp_logits(logits: Tensor, temperature: float = 1.0) -> tuple[Tensor, Tensor | None]:
    """``x = exp(clamp(z / T))`` as a fresh float64 ``[B, K]`` buffer, and the unclamped mask.

    The mask is ``None`` when nothing was clamped (the common case: no extra pass, no memory).
    """
    x = torch.empty(logits.shape, dtype=_F64, device=logits.device)
    x.copy_(logits.detach())
    if temperature != 1.0:
        x.div_(temperature)
    lo, hi = LOGIT_MIN, logit_max(x.shape[-1])
    x_min, x_max = torch.aminmax(x)
    inside = None
    if not (bool(x_min >= lo) and bool(x_max <= hi)):  # also true for NaN
        inside = (x >= lo) & (x <= hi)
        x.clamp_(lo, hi)
    return x.exp_(), inside


def student_alphas(logits: Tensor, offset: float = 1.0) -> Tensor:
    """Dirichlet concentrations of the student: ``alpha = exp(z) + offset``.

    Args:
        logits: ``[B, K]`` student logits, any floating dtype.
        offset: model offset ``m_off >= 0`` (1 for PD-EnD2, 0 for the original EnD2).

    Returns:
        ``[B, K]`` float64 concentrations; ``z`` is clamped to ``[LOGIT_MIN, logit_max(K)]``
        first so ``alpha_0`` never overflows. Differentiable with respect to ``logits``.
    """
    _check_matrix("logits", logits)
    offset = _check_positive("offset", offset, allow_zero=True)
    z = logits.to(_F64).clamp(LOGIT_MIN, logit_max(logits.shape[-1]))
    return z.exp() + offset


def _scaled_grad(grad: Tensor, g: Tensor, dtype: torch.dtype) -> Tensor:
    """``grad * g[:, None]`` in ``dtype``; ``grad`` (saved: float64, or already ``dtype``) is
    left untouched. Below float64 the result is saturated to the dtype's finite range
    (``inf * 0`` -> 0)."""
    if dtype == _F64:
        return grad * g[:, None]
    big = torch.finfo(dtype).max
    scale = g.to(dtype)[:, None]
    out = grad.to(dtype).mul_(scale) if grad.dtype != dtype else grad * scale
    return torch.nan_to_num_(out, nan=0.0, posinf=big, neginf=-big)


def _saturate_to(grad: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast a float64 gradient to ``dtype`` (inside the fused loop), clamped to its range."""
    if dtype == _F64:
        return grad
    big = torch.finfo(dtype).max
    return grad.clamp(-big, big).to(dtype)


# ----------------------------------------------------------------------------- teacher
@dataclass(frozen=True)
class TeacherStats:
    """Sufficient statistics of an ensemble's predictions for one batch.

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
        _check_matrix("mean_probs", mean_probs)
        _check_matrix("mean_log_probs", mean_log_probs)
        if mean_log_probs.shape != mean_probs.shape:
            raise ValueError(
                f"mean_log_probs has shape {tuple(mean_log_probs.shape)} but mean_probs has "
                f"shape {tuple(mean_probs.shape)}"
            )
        if floored_mean_log_probs is not None:
            _check_matrix("floored_mean_log_probs", floored_mean_log_probs)
            if floored_mean_log_probs.shape != mean_probs.shape:
                raise ValueError(
                    f"floored_mean_log_probs has shape {tuple(floored_mean_log_probs.shape)} but "
                    f"mean_probs has shape {tuple(mean_probs.shape)}"
                )
            floored_mean_log_probs = floored_mean_log_probs.to(_F64)
        if int(num_members) < 1:
            raise ValueError(f"num_members must be >= 1, got {num_members}")
        pbar = mean_probs.to(_F64).clamp_min(0.0)
        total = pbar.sum(-1, keepdim=True)
        if bool((total <= 0).any()) or not bool(torch.isfinite(total).all()):
            raise ValueError("mean_probs has a row that does not sum to a positive finite number")
        pbar = pbar / total
        lbar = mean_log_probs.to(_F64).clamp_min(LOG_PROB_FLOOR)
        if rmi is None:
            rmi = _rmi(pbar, lbar)
        elif rmi.shape != pbar.shape[:1]:
            raise ValueError(f"rmi has shape {tuple(rmi.shape)}, expected ({pbar.shape[0]},)")
        else:
            rmi = rmi.to(_F64).clamp_min(0.0)
        return cls(
            mean_probs=pbar,
            mean_log_probs=lbar,
            rmi=rmi,
            num_members=int(num_members),
            floored_mean_log_probs=floored_mean_log_probs,
            temperature=_check_positive("temperature", temperature),
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
    temperature = _check_positive("temperature", temperature)
    smoothing = _check_positive("smoothing", smoothing, allow_zero=True)
    if smoothing >= 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")

    pbar = torch.zeros(b, k, dtype=_F64, device=member_log_probs.device)
    lbar = torch.zeros_like(pbar)
    floored = torch.zeros_like(pbar)
    for j in range(m):
        lp = member_log_probs[:, j].to(_F64)
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
    themselves): each member's ``log_softmax(z / T)``, ``exp`` and ``ln(pi + eps)`` and their
    sums over members, in place; the means are then cast to float64 (``pi_bar`` renormalised)
    and the RMI summed in float64, over row blocks small enough to stay in cache. On a CPU,
    float64 ``exp``/``log`` are ~10x slower than float32, and the float64 :func:`teacher_stats`
    cost more than the student's own step at K = 5,000; this path is several times faster.
    Against it, the differences are O(1e-7) relative in ``pi_bar`` and O(1e-6) absolute in
    ``l_bar`` and the RMI (pinned in tests/test_dirichlet.py).

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
    temperature = _check_positive("temperature", temperature)
    smoothing = _check_positive("smoothing", smoothing, allow_zero=True)
    if smoothing >= 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    m, dev = len(members), members[0].device
    pbar = torch.empty(b, k, dtype=_F64, device=dev)
    lbar, rmi = torch.empty_like(pbar), torch.empty(b, dtype=_F64, device=dev)
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
        log_p = torch.log(p_mean).to(_F64)
        pb = p_mean.to(_F64)
        pb /= pb.sum(-1, keepdim=True)
        lb = l_sum.div_(m).to(_F64).clamp_min_(LOG_PROB_FLOOR)
        pbar[sl], lbar[sl] = pb, lb
        rmi[sl] = torch.where(pb > 0, pb * (log_p - lb), 0.0).sum(-1).clamp_min(0.0)
        if floored is not None:
            floored[sl] = f_sum.div_(m)
    return TeacherStats(
        mean_probs=pbar,
        mean_log_probs=lbar,
        rmi=rmi,
        num_members=m,
        floored_mean_log_probs=floored,
        temperature=temperature,
        smoothing=smoothing,
    )


def _resolve_stats(
    stats: TeacherStats | Tensor,
    logits: Tensor,
    *,
    temperature: float | None = None,
    smoothing: float | None = None,
) -> TeacherStats:
    """Accept ``TeacherStats`` or raw ``[B, M, K]`` member log-probs; check them against logits."""
    if isinstance(stats, Tensor):
        stats = teacher_stats(
            stats,
            temperature=1.0 if temperature is None else temperature,
            smoothing=0.0 if smoothing is None else smoothing,
        )
    elif isinstance(stats, TeacherStats):
        if temperature is not None and not math.isclose(stats.temperature, temperature):
            raise ValueError(
                f"stats were built at temperature {stats.temperature} but temperature="
                f"{temperature} was requested; rebuild them with teacher_stats(..., temperature=)"
            )
        if smoothing is not None and not math.isclose(stats.smoothing, smoothing):
            raise ValueError(
                f"stats were built with smoothing {stats.smoothing} but smoothing={smoothing} "
                "was requested; rebuild them with teacher_stats(..., smoothing=)"
            )
    else:
        raise TypeError(
            f"stats must be TeacherStats or a [B, M, K] tensor, got {type(stats).__name__}"
        )
    if stats.num_classes != logits.shape[1]:
        raise ValueError(
            f"student_logits has K={logits.shape[1]} classes but stats has K={stats.num_classes}"
        )
    if stats.batch_size != logits.shape[0]:
        raise ValueError(
            f"student_logits has B={logits.shape[0]} rows but stats has B={stats.batch_size}"
        )
    if stats.mean_probs.device != logits.device:
        stats = stats.to(logits.device)
    return stats


def proxy_precision(stats: TeacherStats) -> Tensor:
    """Minka's fixed-mean precision estimate ``beta_hat_0 = (K - 1) / (2 RMI + eps)``, ``[B]``."""
    return (stats.num_classes - 1) / (2.0 * stats.rmi + EPS)


def proxy_target(stats: TeacherStats, target_offset: float = 1.0) -> Tensor:
    """Proxy-Dirichlet target ``beta = pi_bar * beta_hat_0 + t``, ``[B, K]`` float64."""
    t = _check_positive("target_offset", target_offset, allow_zero=True)
    return stats.mean_probs * proxy_precision(stats)[:, None] + t


# ----------------------------------------------------------------------------- closed forms
def dirichlet_kl(alpha: Tensor, beta: Tensor) -> Tensor:
    """``KL[Dir(alpha) || Dir(beta)]`` per row, ``[B, K] x [B, K] -> [B]`` (autograd-friendly)."""
    _check_matrix("alpha", alpha)
    _check_matrix("beta", beta)
    if alpha.shape != beta.shape:
        raise ValueError(
            f"alpha has shape {tuple(alpha.shape)} but beta has shape {tuple(beta.shape)}"
        )
    a0 = alpha.sum(-1)
    b0 = beta.sum(-1)
    e_log = torch.digamma(alpha) - torch.digamma(a0)[:, None]
    return (
        torch.lgamma(a0)
        - torch.lgamma(alpha).sum(-1)
        - torch.lgamma(b0)
        + torch.lgamma(beta).sum(-1)
        + ((alpha - beta) * e_log).sum(-1)
    )


def dirichlet_entropy(alpha: Tensor) -> Tensor:
    """Differential entropy ``H[Dir(alpha)]`` per row, ``[B, K] -> [B]``."""
    _check_matrix("alpha", alpha)
    a0 = alpha.sum(-1)
    e_log = torch.digamma(alpha) - torch.digamma(a0)[:, None]
    return torch.lgamma(alpha).sum(-1) - torch.lgamma(a0) - ((alpha - 1.0) * e_log).sum(-1)


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """``sum_c a[:, c] * b[:, c]`` without a ``[B, K]`` temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


# ----------------------------------------------------------------------------- loss cores
# Each core maps (logits [B, K], teacher tensors, scalars, need_grad) -> (value [B], dL/dz | None),
# both float64. The eager cores are the reference; the compiled cores are the same maths fused by
# torch.compile around pipeline.special (tests pin one to the other).


def _end_eager(logits, pbar, neg_entropy, *, need_grad):
    logp = torch.log_softmax(logits.detach(), dim=-1, dtype=_F64)
    value = neg_entropy - _rowdot(pbar, logp)
    grad = logp.exp_().mul_(pbar.sum(-1, keepdim=True)).sub_(pbar) if need_grad else None
    return value, grad


def _end2_eager(logits, lbar, model_offset, temperature, *, need_grad):
    x, inside = _exp_logits(logits, temperature)
    alpha = x + model_offset
    alpha0 = alpha.sum(-1)
    work = torch.lgamma(alpha)
    nll = work.sum(-1) - torch.lgamma(alpha0) - _rowdot(alpha, lbar) + lbar.sum(-1)
    grad = None
    if need_grad:
        torch.digamma(alpha, out=work)
        grad = work.sub_(torch.digamma(alpha0)[:, None]).sub_(lbar).mul_(x)
        grad.mul_(temperature)  # T^2 * dalpha/dz = T^2 * x / T
        if inside is not None:
            grad.mul_(inside)
    return nll * temperature**2, grad


def _rkl_eager(logits, pbar, big_b, model_offset, *, need_grad):
    alpha, inside = _exp_logits(logits)  # x = exp(z) for now
    alpha.add_(model_offset)
    alpha0 = alpha.sum(-1)
    beta = torch.mul(pbar, big_b[:, None]).add_(1.0)
    beta0 = beta.sum(-1)
    work = torch.lgamma(beta)
    kl = work.sum(-1) - torch.lgamma(beta0)
    torch.lgamma(alpha, out=work)
    kl += torch.lgamma(alpha0) - work.sum(-1)
    diff = torch.sub(alpha, beta, out=beta)  # alpha - beta, in beta's memory
    diff0 = diff.sum(-1)
    torch.digamma(alpha, out=work)
    kl += _rowdot(diff, work) - diff0 * torch.digamma(alpha0)
    grad = None
    if need_grad:
        torch.polygamma(1, alpha, out=work)
        grad = work.mul_(diff).sub_((diff0 * torch.polygamma(1, alpha0))[:, None])
        grad.mul_(alpha.sub_(model_offset)).div_(big_b[:, None])  # * x / Bp
        if inside is not None:
            grad.mul_(inside)
    return (kl / big_b).clamp_min_(0.0), grad


def _fkl_eager(logits, beta, model_offset, *, need_grad):
    x, inside = _exp_logits(logits)
    alpha = x + model_offset
    alpha0 = alpha.sum(-1)
    beta0 = beta.sum(-1)
    work = torch.lgamma(beta)
    kl = torch.lgamma(beta0) - work.sum(-1) - torch.lgamma(alpha0)
    torch.lgamma(alpha, out=work)
    kl += work.sum(-1)
    e_log_beta = torch.digamma(beta).sub_(torch.digamma(beta0)[:, None])
    kl += _rowdot(beta, e_log_beta) - _rowdot(alpha, e_log_beta)
    grad = None
    if need_grad:
        torch.digamma(alpha, out=work)
        grad = work.sub_(torch.digamma(alpha0)[:, None]).sub_(e_log_beta).mul_(x)
        if inside is not None:
            grad.mul_(inside)
    return kl.clamp_min_(0.0), grad


def _clamped_exp(z, inv_t, lo, hi):
    u = z.to(_F64) * inv_t
    return torch.exp(u.clamp(lo, hi)), (u >= lo) & (u <= hi)


# The fused cores split each gradient into a part that needs no row sum (computed in the same
# loop as the reductions, so the gamma family is evaluated once per element) and a cheap
# row-constant correction ``x * r_b``.


def _end2_fused(z, lbar, m, t, lo, hi, need_grad: bool):
    x, inside = _clamped_exp(z, 1.0 / t, lo, hi)
    alpha = x + m
    lg, dg, _ = special.gamma_family(alpha)
    nll = (lg - (alpha - 1.0) * lbar).sum(-1) - torch.lgamma(alpha.sum(-1))
    grad = None
    if need_grad:
        part = (dg - lbar) * x * t
        row = torch.digamma(alpha.sum(-1))[:, None] * t
        grad = _saturate_to(torch.where(inside, part - x * row, 0.0), z.dtype)
    return nll * t * t, grad


def _rkl_fused(z, pbar, big_b, m, lo, hi, need_grad: bool):
    x, inside = _clamped_exp(z, 1.0, lo, hi)
    alpha = x + m
    beta = pbar * big_b[:, None] + 1.0
    diff = alpha - beta
    lg, dg, tg = special.gamma_family(alpha)
    alpha0, diff0 = alpha.sum(-1), diff.sum(-1)
    kl = (special.lgamma(beta) - lg + diff * dg).sum(-1)
    kl = kl + torch.lgamma(alpha0) - torch.lgamma(beta.sum(-1)) - diff0 * torch.digamma(alpha0)
    grad = None
    if need_grad:
        part = diff * tg * x / big_b[:, None]
        row = (diff0 * torch.polygamma(1, alpha0) / big_b)[:, None]
        grad = _saturate_to(torch.where(inside, part - x * row, 0.0), z.dtype)
    return (kl / big_b).clamp_min(0.0), grad


def _fkl_fused(z, beta, m, lo, hi, need_grad: bool):
    x, inside = _clamped_exp(z, 1.0, lo, hi)
    alpha = x + m
    lga, dga, _ = special.gamma_family(alpha)
    lgb, dgb, _ = special.gamma_family(beta)
    alpha0, beta0 = alpha.sum(-1), beta.sum(-1)
    # sum (beta - alpha)(psi(beta) - psi(beta0)) = sum (beta - alpha) psi(beta) - (b0 - a0) psi(b0)
    psi_b0 = torch.digamma(beta0)
    kl = (lga - lgb + (beta - alpha) * dgb).sum(-1) - (beta0 - alpha0) * psi_b0
    kl = kl + torch.lgamma(beta0) - torch.lgamma(alpha0)
    grad = None
    if need_grad:
        part = (dga - dgb) * x
        row = (torch.digamma(alpha0) - psi_b0)[:, None]
        grad = _saturate_to(torch.where(inside, part - x * row, 0.0), z.dtype)
    return kl.clamp_min(0.0), grad


_FUSED = {"end2": _end2_fused, "rkl": _rkl_fused, "fkl": _fkl_fused}
_compiled_cache: dict[str, object] = {}
_compile_failed = False
BACKEND_ENV = "PROXY_END2_LOSS_BACKEND"
"""Environment variable choosing the loss backend: ``auto`` (default), ``eager`` or ``compiled``."""
COMPILE_MIN_NUMEL = 1 << 17
"""In ``auto`` mode, inputs with at least this many logits use the compiled fused cores."""


def loss_backend(numel: int) -> str:
    """``"eager"`` or ``"compiled"``: which implementation a loss over ``numel`` logits uses."""
    mode = os.environ.get(BACKEND_ENV, "auto")
    if mode not in ("auto", "eager", "compiled"):
        raise ValueError(f"{BACKEND_ENV} must be auto, eager or compiled, got {mode!r}")
    if mode == "eager" or (mode == "auto" and (numel < COMPILE_MIN_NUMEL or _compile_failed)):
        return "eager"
    return "compiled"


def _run_fused(name: str, eager_core, logits: Tensor, args: tuple, scalars: tuple, need_grad):
    """Run the compiled fused core ``name``; in auto mode fall back to eager if compiling fails."""
    global _compile_failed
    fn = _compiled_cache.get(name)
    if fn is None:
        fn = _compiled_cache[name] = torch.compile(_FUSED[name], dynamic=True)
    k = logits.shape[-1]
    lims = torch.tensor([LOGIT_MIN, logit_max(k)], dtype=_F64, device=logits.device)
    sc = [torch.tensor(v, dtype=_F64, device=logits.device) for v in scalars]
    try:
        return fn(logits.detach(), *args, *sc, lims[0], lims[1], need_grad)
    except Exception as err:  # compiler missing or broken: tell once, then stay eager
        if os.environ.get(BACKEND_ENV, "auto") == "compiled":
            raise
        _compile_failed = True
        warnings.warn(f"compiled loss backend unavailable ({err!r}); using eager", stacklevel=3)
        return eager_core(logits, *args, *scalars, need_grad=need_grad)


class _Loss(torch.autograd.Function):
    """Generic wrapper: the core returns the value and (if needed) the gradient in one pass."""

    @staticmethod
    def forward(ctx, logits, name, eager_core, args, scalars):
        need_grad = ctx.needs_input_grad[0]
        if name in _FUSED and loss_backend(logits.numel()) == "compiled":
            value, grad = _run_fused(name, eager_core, logits, args, scalars, need_grad)
        else:
            value, grad = eager_core(logits, *args, *scalars, need_grad=need_grad)
        if grad is not None:
            ctx.save_for_backward(grad)
        ctx.dtype = logits.dtype
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return _scaled_grad(grad, g, ctx.dtype), None, None, None, None


# ----------------------------------------------------------------------------- losses
def end_loss(
    student_logits: Tensor, stats: TeacherStats | Tensor, reduction: str = "mean"
) -> Tensor:
    """EnD (plain ensemble distillation): ``KL[pi_bar || softmax(z)]``.

    Args:
        student_logits: ``[B, K]``.
        stats: :class:`TeacherStats` or ``[B, M, K]`` member log-probs.
        reduction: ``"mean"`` over the batch, ``"sum"``, or ``"none"`` (``[B]``).
    """
    _check_matrix("student_logits", student_logits)
    s = _resolve_stats(stats, student_logits)
    pbar = s.mean_probs
    neg_entropy = torch.xlogy(pbar, pbar).sum(-1)
    value = _Loss.apply(student_logits, "end", _end_eager, (pbar, neg_entropy), ())
    return _reduce(value, reduction)


def end2_loss(
    student_logits: Tensor,
    stats: TeacherStats | Tensor,
    model_offset: float = 0.0,
    *,
    temperature: float | None = None,
    smoothing: float | None = None,
    reduction: str = "mean",
) -> Tensor:
    """EnD2: negative log-likelihood of the members under the student's Dirichlet.

    ``L = T^2 [sum_c lnG(alpha_c) - lnG(alpha_0) - sum_c (alpha_c - 1) l_c]`` with
    ``alpha = exp(z / T) + model_offset`` and ``l_c = mean_m ln(pi_m,c + eps)`` (members tempered
    by ``T`` and centrally smoothed, as recorded in ``stats``).

    Args:
        student_logits: ``[B, K]``.
        stats: :class:`TeacherStats` (must carry ``floored_mean_log_probs``) or ``[B, M, K]``
            member log-probs; ``temperature``/``smoothing`` build the stats from the latter, and
            must match the stats' own when both are given.
        model_offset: ``m_off >= 0`` (0 in the original EnD2).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """
    _check_matrix("student_logits", student_logits)
    s = _resolve_stats(stats, student_logits, temperature=temperature, smoothing=smoothing)
    if s.floored_mean_log_probs is None:
        raise ValueError(
            "end2_loss needs stats.floored_mean_log_probs (mean_m ln(pi_m + eps)); build the stats "
            "with teacher_stats(member_log_probs) or pass floored_mean_log_probs to "
            "TeacherStats.from_cache"
        )
    m_off = _check_positive("model_offset", model_offset, allow_zero=True)
    lbar = s.floored_mean_log_probs
    value = _Loss.apply(student_logits, "end2", _end2_eager, (lbar,), (m_off, s.temperature))
    return _reduce(value, reduction)


def proxy_rkl_loss(
    student_logits: Tensor,
    stats: TeacherStats | Tensor,
    model_offset: float = 1.0,
    target_offset: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """PD-EnD2: ``KL[Dir(alpha) || Dir(pi_bar * beta_0 + 1)] / beta_0``.

    ``alpha = exp(z) + model_offset``, ``beta_0 = beta_hat_0 + K * target_offset``. A true,
    non-negative KL divided by ``beta_0``: it and its gradient vanish at ``alpha = pi_bar beta_0
    + 1`` (with offsets 1: ``softmax(z) = pi_bar`` and ``sum exp(z) = beta_0``). The gradient is
    ``x_c / beta_0 [(alpha_c - b_c) psi'(alpha_c) - (alpha_0 - b_0) psi'(alpha_0)]``,
    ``~ p_model - p_target``.

    Args:
        student_logits: ``[B, K]``.
        stats: :class:`TeacherStats` or ``[B, M, K]`` member log-probs.
        model_offset, target_offset: ``>= 0``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """
    _check_matrix("student_logits", student_logits)
    s = _resolve_stats(stats, student_logits)
    m_off = _check_positive("model_offset", model_offset, allow_zero=True)
    t = _check_positive("target_offset", target_offset, allow_zero=True)
    big_b = proxy_precision(s) + s.num_classes * t
    value = _Loss.apply(student_logits, "rkl", _rkl_eager, (s.mean_probs, big_b), (m_off,))
    return _reduce(value, reduction)


def proxy_fkl_loss(
    student_logits: Tensor,
    stats: TeacherStats | Tensor,
    model_offset: float = 1.0,
    target_offset: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """Forward-KL ablation: ``KL[Dir(beta) || Dir(alpha)]`` with ``beta = proxy_target(stats)``.

    Not normalised. Arguments as :func:`proxy_rkl_loss`.
    """
    _check_matrix("student_logits", student_logits)
    s = _resolve_stats(stats, student_logits)
    m_off = _check_positive("model_offset", model_offset, allow_zero=True)
    # Dir(beta) needs beta > 0 everywhere; pi_bar may hold exact zeros, so t must be > 0 here.
    beta = proxy_target(s, _check_positive("target_offset", target_offset))
    value = _Loss.apply(student_logits, "fkl", _fkl_eager, (beta,), (m_off,))
    return _reduce(value, reduction)
