"""The error a stage or the workflow raises for a config value no job can run with.

Its own module, torch- and import-free, so that the stages that raise it (a vocabulary beyond the
corpus, an ImageFolder ``val_size`` beyond its images) do not import :mod:`pipeline.config`:
editing a config check must not rerun every job whose stage imports the error
(:mod:`pipeline.imports`). :mod:`pipeline.config` re-exports it.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value no job can run with."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"config key {key}: {value!r} is not allowed: {allowed}")
