"""pipeline.maths.dirichlet: the student concentrations and the closed forms."""

import pytest
import torch
from torch.distributions import Dirichlet, kl_divergence

from pipeline.maths.dirichlet import dirichlet_entropy, dirichlet_kl, student_alphas
from tests.maths.synthetic import F64, student


def test_student_alphas_definition_and_clipping():
    z = student(3, 5)
    assert torch.allclose(student_alphas(z, 0.5), z.exp() + 0.5, rtol=1e-15, atol=0)
    huge = torch.tensor([[1e4, -1e4, 0.0]], dtype=torch.float32)
    a = student_alphas(huge, 1.0)
    assert a.dtype == F64 and torch.isfinite(a).all() and torch.isfinite(a.sum())
    assert a[0, 1] == 1.0
    with pytest.raises(ValueError, match="offset"):
        student_alphas(z, -1.0)


def test_closed_forms_match_torch_distributions():
    g = torch.Generator().manual_seed(18)
    a = torch.rand(4, 6, generator=g, dtype=F64) * 5 + 0.1
    b = torch.rand(4, 6, generator=g, dtype=F64) * 5 + 0.1
    torch.testing.assert_close(dirichlet_kl(a, b), kl_divergence(Dirichlet(a), Dirichlet(b)))
    torch.testing.assert_close(dirichlet_entropy(a), Dirichlet(a).entropy())


# ------------------------------------------------------------------ robustness
