"""Synthetic ensembles and students shared by the maths tests."""

import torch

F64 = torch.float64
PAPER = {
    "end_loss": {},
    "end2_loss": {"model_offset": 0.0},
    "proxy_rkl_loss": {"model_offset": 1.0, "target_offset": 1.0},
    "proxy_fkl_loss": {"model_offset": 1.0, "target_offset": 1.0},
}
"""The options of each loss in the paper (the losses have no defaults: the pipeline's are the
method registry's), for tests that name none."""


def paper(fn, **kw):
    """``fn`` (a loss) with the paper's options, ``kw`` on top."""
    return lambda z, stats, **more: fn(z, stats, **{**PAPER[fn.__name__], **kw, **more})


def ensemble(b, m, k, scale=2.0, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    base = scale * torch.randn(b, 1, k, generator=g, dtype=F64)
    members = base + 0.8 * torch.randn(b, m, k, generator=g, dtype=F64)
    return torch.log_softmax(members, -1).to(dtype)


def student(b, k, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(b, k, generator=g, dtype=F64)


# ------------------------------------------------------------------ student and teacher
