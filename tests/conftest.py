"""Shared test settings: deterministic hypothesis in CI, one torch thread pool, loss backends."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "ci", parent=settings.get_profile("default"), derandomize=True, database=None, print_blob=True
)
settings.load_profile("ci" if os.environ.get("CI") else "default")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(params=["eager", "compiled"])
def backend(request, monkeypatch):
    """Run a test under each loss backend (see pipeline.dirichlet.loss_backend)."""
    monkeypatch.setenv("PROXY_END2_LOSS_BACKEND", request.param)
    return request.param


@pytest.fixture
def eager(monkeypatch):
    monkeypatch.setenv("PROXY_END2_LOSS_BACKEND", "eager")
