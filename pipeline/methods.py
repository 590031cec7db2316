"""The method registry: every distillation method by name, its loss, its options and their
defaults, and how it is shown. This is the one home of those defaults: training (both tasks),
evaluation, the gradient analysis and the figures read them from here, and the config schemas
only check the options' types and ranges.

Importing this module does not import torch (the workflow reads it while building the DAG); the
loss is looked up in :mod:`pipeline.maths.losses` when it is first called.

=========  ==========================================================  =========================
name       loss (``docs/method.md``)                                    options (default)
=========  ==========================================================  =========================
end        KL[pi_bar || softmax(z)]                                     —
end2       Dirichlet NLL of the members                                 model_offset (0),
                                                                        smoothing (0),
                                                                        temperature (none)
pd_end2    KL[Dir(alpha) || Dir(pi_bar beta_0 + 1)] / beta_0             model_offset (1),
                                                                        target_offset (1)
pd_fkl     KL[Dir(beta) || Dir(alpha)] (ablation)                       model_offset (1),
                                                                        target_offset (1)
=========  ==========================================================  =========================

``temperature`` is the EnD2 schedule ``{initial, hold_epochs, anneal_epochs}``: hold
``T = initial`` for ``hold_epochs``, then decay linearly to 1 over ``anneal_epochs``, updated
every training step (:func:`temperature_at`).

Every method also takes the student options of :data:`STUDENT_OPTIONS` (they set the student up,
the loss never sees them): ``init_bias: log_marginal`` starts the student's output bias at the
ensemble's log class-marginal.

**Variants.** A key of ``students.methods`` names a *group* (the system prefix, the line in a
table): a registered method, or any other name with ``method: <registered name>`` among its
options, e.g. ``pd_end2_moff0: {method: pd_end2, model_offset: 0}`` beside ``pd_end2``.
:func:`variant` resolves a group; :func:`label`, :func:`color` and :func:`order` show it (a
variant ``<method>_<suffix>`` reads "<method's display> <suffix>").
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "COLORS",
    "STUDENT_OPTIONS",
    "GROUP_LABELS",
    "GROUP_ORDER",
    "METHODS",
    "Method",
    "color",
    "get",
    "label",
    "loss",
    "member_transform",
    "model_offset",
    "needs_members",
    "order",
    "parse_system",
    "resolve_options",
    "temperature_at",
    "variant",
]


@dataclass(frozen=True)
class Method:
    """One distillation method.

    Attributes:
        name: the config key (``students.methods.<name>``) and the system prefix.
        display: the name in tables and figures.
        color: its matplotlib colour.
        loss_fn: the function of :mod:`pipeline.maths.losses` that trains it.
        defaults: every option the method takes, with its default.
        dirichlet: the student's output is read as a Dirichlet ``alpha = exp(z) + m_off``
            (uncertainty from ``alpha``); otherwise as a categorical ``softmax(z)``.
        needs_floored: the loss reads ``mean_m ln(pi_m + eps)`` (EnD2's likelihood target).
        needs_ensemble: the loss needs the ensemble's diversity (its RMI, a Dirichlet fitted to
            the members): an ensemble of one member (RMI 0, one sample) cannot teach it.
    """

    name: str
    display: str
    color: str
    loss_fn: str
    defaults: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    dirichlet: bool = True
    needs_floored: bool = False
    needs_ensemble: bool = True


def _method(name, display, color, loss_fn, defaults, **kw) -> Method:
    return Method(name, display, color, loss_fn, MappingProxyType(dict(defaults)), **kw)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        _method("end", "EnD", "tab:blue", "end_loss", {}, dirichlet=False, needs_ensemble=False),
        _method(
            "end2",
            "EnD²",
            "tab:orange",
            "end2_loss",
            {"model_offset": 0.0, "smoothing": 0.0, "temperature": None},
            needs_floored=True,
        ),
        _method(
            "pd_end2",
            "PD-EnD²",
            "tab:green",
            "proxy_rkl_loss",
            {"model_offset": 1.0, "target_offset": 1.0},
        ),
        _method(
            "pd_fkl",
            "PD-FKL",
            "tab:purple",
            "proxy_fkl_loss",
            {"model_offset": 1.0, "target_offset": 1.0},
        ),
    )
}

GROUP_ORDER = ["member", "ensemble", *METHODS]
"""Display order of the system groups: single members, the ensemble, then every method."""
GROUP_LABELS = {"member": "Single model", "ensemble": "Ensemble"} | {
    m.name: m.display for m in METHODS.values()
}
COLORS = {"member": "tab:gray", "ensemble": "black"} | {m.name: m.color for m in METHODS.values()}


STUDENT_OPTIONS = MappingProxyType({"init_bias": None})
"""Options every method takes that set up the student, not its loss, with their defaults:
``init_bias``: ``None`` (the model's own initialisation) or ``"log_marginal"`` (the output bias
starts at ln of the ensemble's mean pi_bar over training tokens: the task teacher's
``log_marginal()``)."""
INIT_BIAS = ("log_marginal",)
VARIANT_PALETTE = ("tab:red", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "navy", "gold")


def get(name: str) -> Method:
    """The registered method ``name``; a ``ValueError`` naming the choices otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {tuple(METHODS)}")
    return METHODS[name]


def resolve_options(name: str, options: dict | None) -> dict[str, Any]:
    """``options`` completed with the method's defaults and :data:`STUDENT_OPTIONS`; an unknown
    option or an unknown ``init_bias`` is an error."""
    method, options = get(name), dict(options or {})
    allowed = {**method.defaults, **STUDENT_OPTIONS}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"method {name!r} has no option(s) {unknown}; it takes {sorted(allowed)}")
    init = options.get("init_bias")
    if init is not None and init not in INIT_BIAS:
        raise ValueError(f"init_bias must be one of {INIT_BIAS} or null, got {init!r}")
    return {**allowed, **options}


def variant(group: str, options: dict | None) -> tuple[str, dict[str, Any]]:
    """The registered method and the options (without ``method``) of ``students.methods.<group>``:
    ``method`` names it, defaulting to ``group`` itself. Errors name the group."""
    options = dict(options or {})
    name = options.pop("method", group)
    if "-seed" in group or not group.replace("_", "").isalnum():
        raise ValueError(f"method group {group!r}: use letters, digits and _ only")
    if name not in METHODS:
        hint = "" if group == name else f" (method: {name!r})"
        raise ValueError(
            f"method group {group!r}{hint} is not a registered method; give `method:` one of "
            f"{tuple(METHODS)}"
        )
    resolve_options(name, options)
    return name, options


def _base(group: str) -> tuple[str | None, str]:
    """The registered method a group is named after (longest ``<method>_`` prefix) and the rest."""
    if group in METHODS:
        return group, ""
    best = max((m for m in METHODS if group.startswith(m + "_")), key=len, default=None)
    return best, group[len(best) + 1 :] if best else group


def label(group: str) -> str:
    """How a system group is shown: :data:`GROUP_LABELS`, a variant as "<display> <suffix>"."""
    if group in GROUP_LABELS:
        return GROUP_LABELS[group]
    base, rest = _base(group)
    return f"{METHODS[base].display} {rest.replace('_', ' ')}" if base else group


def color(group: str) -> str:
    """A group's colour: :data:`COLORS`, a variant one of :data:`VARIANT_PALETTE` (stable in
    its name)."""
    if group in COLORS:
        return COLORS[group]
    return VARIANT_PALETTE[zlib.crc32(group.encode()) % len(VARIANT_PALETTE)]


def order(group: str) -> tuple[int, str]:
    """Sort key of a group: :data:`GROUP_ORDER`, a variant just after its base method."""
    if group in GROUP_ORDER:
        return GROUP_ORDER.index(group), ""
    base, rest = _base(group)
    return (GROUP_ORDER.index(base), rest) if base else (len(GROUP_ORDER), group)


def model_offset(name: str, options: dict | None) -> float:
    """The student's ``m_off`` for ``name``: the training value, its option or the registry's
    default (evaluation must use it); 0 for a categorical student (``dirichlet=False``), whose
    output has no offset."""
    opts = resolve_options(name, options)
    return float(opts["model_offset"]) if get(name).dirichlet else 0.0


def temperature_at(progress: float, schedule: dict | None) -> float:
    """EnD2 temperature at ``progress`` (epochs done, a float: epoch + step / steps):
    ``initial`` for the first ``hold_epochs``, then linear in progress down to 1 over the next
    ``anneal_epochs`` (step by step, never a jump: a sudden drop from T = 2.5 to 1 wrecked a
    student taught by confident members), then 1."""
    if not schedule:
        return 1.0
    t0 = float(schedule.get("initial", 1.0))
    hold, anneal = int(schedule.get("hold_epochs", 0)), int(schedule.get("anneal_epochs", 0))
    if progress < hold:
        return t0
    if anneal <= 0:
        return 1.0
    frac = min(1.0, (progress - hold) / anneal)
    return t0 + (1.0 - t0) * frac


def member_transform(name: str, options: dict | None, progress: float) -> tuple[float, float]:
    """``(temperature, smoothing)`` applied to the members' outputs at ``progress`` (epochs
    done; 1 and 0 for every method but EnD2, whose schedule re-tempers them)."""
    opts = resolve_options(name, options)
    return temperature_at(progress, opts.get("temperature")), float(opts.get("smoothing", 0.0))


def needs_members(name: str, options: dict | None) -> bool:
    """Whether the loss needs each member's log-probs rather than their statistics at T = 1
    (EnD2 with a temperature schedule or smoothing re-tempers the members)."""
    return member_transform(name, options, 0) != (1.0, 0.0)


def loss(name: str, options: dict | None, logits, stats, reduction: str = "mean"):
    """The loss of method ``name`` (batch mean by default) for student ``logits [B, K]`` and
    :class:`pipeline.maths.stats.TeacherStats` ``stats`` (built with the member transform of
    :func:`member_transform`)."""
    from pipeline.maths import losses

    method, opts = get(name), resolve_options(name, options)
    kwargs = {k: float(opts[k]) for k in ("model_offset", "target_offset") if k in opts}
    return getattr(losses, method.loss_fn)(logits, stats, reduction=reduction, **kwargs)


def parse_system(system: str) -> tuple[str, int | None]:
    """A system's group and seed: ``member-3`` -> (``member``, 3); ``ensemble`` -> (``ensemble``,
    None); ``pd_end2-seed1`` -> (``pd_end2``, 1)."""
    if system == "ensemble":
        return "ensemble", None
    if system.startswith("member-"):
        return "member", int(system.split("-", 1)[1])
    if "-seed" in system:
        method, seed = system.rsplit("-seed", 1)
        return method, int(seed)
    raise ValueError(f"cannot parse system name {system!r}")
