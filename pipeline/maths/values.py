"""Whether the caller needs loss values or only gradients (torch-free: the training loop imports it
without the losses).

A training step needs the gradient of the distillation loss on every step but its value only
for logging. Inside :func:`gradient_only` the losses of :mod:`pipeline.maths.losses` may compute
the gradient alone, with the float32 kernels of :mod:`pipeline.maths._grad32`, and return a
*placeholder* value: 0 per example where the gradient is finite, NaN where it is not (so a
divergence still shows). Each such call counts in the record the context yields, so the caller
can tell placeholders from values (``record.placeholders > 0``); a loss that has no
gradient-only kernel (cross-entropy, the forward-KL ablation) returns its true value there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Record:
    """What happened inside one :func:`gradient_only` block."""

    active: bool = False
    placeholders: int = 0


_current = Record()


def active() -> bool:
    """Whether the losses may return a placeholder value now."""
    return _current.active


def mark_placeholder() -> None:
    """Called by a loss that returned a placeholder value."""
    _current.placeholders += 1


@contextmanager
def gradient_only(enabled: bool = True) -> Iterator[Record]:
    """Within the block (when ``enabled``), losses may skip their value; yields the block's
    :class:`Record`. Blocks nest; the outer state is restored on exit."""
    global _current
    outer, _current = _current, Record(active=enabled)
    try:
        yield _current
    finally:
        _current = outer
