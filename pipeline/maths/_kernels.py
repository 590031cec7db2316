"""The loss kernels behind :mod:`pipeline.maths.losses` (private: call the losses instead).

Each core maps ``(logits [B, K], teacher tensors, scalars, need_grad)`` to ``(value [B], dL/dz
[B, K] | None)``, both float64, with closed-form gradients (``docs/method.md``, "the gradient
analysis"): one float64 pass over ``[B, K]`` per special function, no autograd graph through
``lgamma``/``digamma``. The eager cores are the reference; the fused cores are the same maths
written around :mod:`pipeline.maths.special` for ``torch.compile`` (tests pin one to the other).
Clamped logits get zero gradient; gradients cast back to float16/bfloat16/float32 are saturated to
that dtype's finite range. Inside :func:`pipeline.maths.values.gradient_only`, :class:`Loss` runs
the float32 gradient kernels of :mod:`._grad32` instead where they hold (:func:`_gradient_only`).
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from pipeline.maths import _grad32, special, values
from pipeline.maths.dirichlet import F64, LOGIT_MIN, logit_max


def _exp_logits(logits: Tensor, temperature: float = 1.0) -> tuple[Tensor, Tensor | None]:
    """``x = exp(clamp(z / T))`` as a fresh float64 ``[B, K]`` buffer, and the unclamped mask.

    The mask is ``None`` when nothing was clamped (the common case: no extra pass, no memory).
    """
    x = torch.empty(logits.shape, dtype=F64, device=logits.device)
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


def _scaled_grad(grad: Tensor, g: Tensor, dtype: torch.dtype) -> Tensor:
    """``grad * g[:, None]`` in ``dtype``; ``grad`` (saved: float64, or already ``dtype``) is
    left untouched. Below float64 the result is saturated to the dtype's finite range: the
    float64 gradient is clamped before the cast, so an entry too large for ``dtype`` times a
    zero weight gives 0, not ``inf * 0``. A NaN stays NaN: a divergence must surface (the
    training loop stops on it), never be zeroed away."""
    if dtype == F64:
        return grad * g[:, None]
    big = torch.finfo(dtype).max
    scale = g.to(dtype)[:, None]
    out = _saturate_to(grad, dtype).mul_(scale) if grad.dtype != dtype else grad * scale
    return out.clamp_(-big, big)  # clamp keeps NaN


def _saturate_to(grad: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast a float64 gradient to ``dtype`` (inside the fused loop), clamped to its range."""
    if dtype == F64:
        return grad
    big = torch.finfo(dtype).max
    return grad.clamp(-big, big).to(dtype)


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """``sum_c a[:, c] * b[:, c]`` without a ``[B, K]`` temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


# ----------------------------------------------------------------------------- loss cores
# Each core maps (logits [B, K], teacher tensors, scalars, need_grad) -> (value [B], dL/dz | None),
# both float64. The eager cores are the reference; the compiled cores are the same maths fused by
# torch.compile around pipeline.special (tests pin one to the other).


def end_eager(logits, pbar, *, need_grad):
    logp = torch.log_softmax(logits.detach(), dim=-1, dtype=F64)
    value = torch.xlogy(pbar, pbar).sum(-1) - _rowdot(pbar, logp)
    grad = logp.exp_().mul_(pbar.sum(-1, keepdim=True)).sub_(pbar) if need_grad else None
    return value, grad


def end2_eager(logits, lbar, model_offset, temperature, *, need_grad):
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


def rkl_eager(logits, pbar, big_b, model_offset, *, need_grad):
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


def fkl_eager(logits, beta, model_offset, *, need_grad):
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
    u = z.to(F64) * inv_t
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


def _compiled(name: str, fn):
    compiled = _compiled_cache.get(name)
    if compiled is None:
        compiled = _compiled_cache[name] = torch.compile(fn, dynamic=True)
    return compiled


def _compile_failure(err: Exception) -> None:
    """In auto mode, tell once that compiling failed and stay eager; otherwise re-raise."""
    global _compile_failed
    if os.environ.get(BACKEND_ENV, "auto") == "compiled":
        raise err
    _compile_failed = True
    warnings.warn(f"compiled loss backend unavailable ({err!r}); using eager", stacklevel=4)


def _run_fused(name: str, eager_core, logits: Tensor, args: tuple, scalars: tuple, need_grad):
    """Run the compiled fused core ``name``; in auto mode fall back to eager if compiling fails."""
    fn = _compiled(name, _FUSED[name])
    k = logits.shape[-1]
    lims = torch.tensor([LOGIT_MIN, logit_max(k)], dtype=F64, device=logits.device)
    sc = [torch.tensor(v, dtype=F64, device=logits.device) for v in scalars]
    try:
        return fn(logits.detach(), *args, *sc, lims[0], lims[1], need_grad)
    except Exception as err:  # compiler missing or broken: tell once, then stay eager
        _compile_failure(err)
        return eager_core(logits, *args, *scalars, need_grad=need_grad)


EAGER32_MAX_NUMEL = 1 << 21
"""The float32 kernels (:data:`._grad32.KERNELS`: not the forward-KL ablation) run eagerly only
when the eager backend is asked for (``PROXY_END2_LOSS_BACKEND=eager``) and up to this many
logits. Eager, they are a few dozen
small ops whose temporaries outweigh float32 arithmetic: measured, 2x faster than the float64
eager kernels at 256 x 1,000 but 2.5x slower at 256 x 40,000, and slower on the small batches
(~40k logits) that ``auto`` leaves eager; so ``auto`` keeps the float64 kernels wherever it does
not compile."""


def _gradient_only(name: str, logits: Tensor, args: tuple, scalars: tuple):
    """``(placeholder [B], float32 gradient)`` from :mod:`._grad32`, or ``None`` where its
    kernels do not hold for these logits, the logits are float64 or the backend runs eagerly
    (see :data:`EAGER32_MAX_NUMEL`): the float64 kernels run instead."""
    numel = logits.numel()
    if name not in _grad32.KERNELS or logits.dtype == F64:  # float64 logits get float64 maths
        return None
    compiled = loss_backend(numel) == "compiled"
    eager = os.environ.get(BACKEND_ENV, "auto") == "eager" and numel <= EAGER32_MAX_NUMEL
    temperature = scalars[1] if name == "end2" else 1.0
    if not (compiled or eager) or not _grad32.fits(logits, temperature):
        return None
    z, dev = logits.detach(), logits.device
    if name == "end":
        inputs = (z, args[0])
    elif name == "end2":
        inputs = (z, args[0], *(torch.tensor(v, dtype=F64, device=dev) for v in scalars))
    else:
        inputs = (z, *args, torch.tensor(scalars[0], dtype=F64, device=dev))
    kernel = _grad32.KERNELS[name]
    if compiled:
        try:
            return _compiled(f"{name}32", kernel)(*inputs)
        except Exception as err:
            _compile_failure(err)
            return None  # auto mode: the float64 kernels run eagerly from now on
    return kernel(*inputs)


class Loss(torch.autograd.Function):
    """Generic wrapper: the core returns the value and (if needed) the gradient in one pass.

    Inside :func:`pipeline.maths.values.gradient_only` a loss with a float32 kernel returns
    the gradient alone and a placeholder value (0, or NaN for a non-finite gradient row)."""

    @staticmethod
    def forward(ctx, logits, name, eager_core, args, scalars, grad_only=False):
        need_grad = ctx.needs_input_grad[0]
        out = None
        if need_grad and grad_only:
            out = _gradient_only(name, logits, args, scalars)
            if out is not None:
                values.mark_placeholder()
        if out is not None:
            value, grad = out
        else:  # the float64 kernels: float32 teacher tensors (online statistics) widened here
            args = tuple(a.to(F64) for a in args)
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
        return _scaled_grad(grad, g, ctx.dtype), None, None, None, None, None


def apply(logits: Tensor, name: str, eager_core, args: tuple, scalars: tuple) -> Tensor:
    """The loss ``name`` through :class:`Loss`; gradient-only where a gradient will be formed
    (grad mode on, ``logits`` requiring it) inside :func:`pipeline.maths.values.gradient_only`."""
    grad_only = values.active() and torch.is_grad_enabled() and logits.requires_grad
    return Loss.apply(logits, name, eager_core, args, scalars, grad_only)
