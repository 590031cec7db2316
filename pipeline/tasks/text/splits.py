"""Which chapters go to which split (torch-free: the corpus and the config checks read it).

Chapter ``c`` (counted over the novels) goes to ``val`` when ``c % 10 == val_mod``, to ``test``
when ``c % 10 == test_mod``, else to ``train`` (``dataset.val_mod``, ``dataset.test_mod``)."""

from __future__ import annotations

RESIDUES = {"val_mod": 8, "test_mod": 9}
"""The defaults of ``dataset.val_mod`` and ``dataset.test_mod``."""


def residues(dataset: dict) -> tuple[int, int]:
    """``(val_mod, test_mod)`` of the ``dataset`` config slice."""
    return tuple(int(dataset.get(k, d)) for k, d in RESIDUES.items())
