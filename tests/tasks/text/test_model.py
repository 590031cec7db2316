"""The token task's model: logits of non-padding positions only, length-bucketed batches."""

import math

import torch

from pipeline.tasks.text import model as lm


def test_model_emits_logits_for_non_padding_positions_in_target_order():
    torch.manual_seed(0)
    model = lm.TokenLSTM(11, dim=8, layers=2).eval()
    x = torch.tensor([[11, 3, 4, -1], [11, 5, -1, -1], [11, 2, 7, 9]])
    logits = model(x)
    assert logits.shape == (9, 11)
    targets = torch.tensor([[3, 4, 1, -1], [5, 1, -1, -1], [2, 7, 9, 1]])
    y = lm.targets_of(targets, torch.arange(3), 4)
    assert y.tolist() == [3, 4, 1, 5, 1, 2, 7, 9, 1]
    # row 1 alone gives the same logits as inside the padded batch (no leakage from padding)
    alone = model(x[1:2, :2])
    torch.testing.assert_close(alone, logits[3:5])
    assert lm.trim(x[1:2]).shape == (1, 2)


def test_length_batches_cover_every_index_once_and_are_deterministic():
    lengths = torch.randint(1, 40, (1000,), generator=torch.Generator().manual_seed(1))
    batcher = lm.length_batches(lengths)
    a = batcher(1000, 7, torch.Generator().manual_seed(3))
    b = batcher(1000, 7, torch.Generator().manual_seed(3))
    assert len(a) == math.ceil(1000 / 7)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert sorted(torch.cat(a).tolist()) == list(range(1000))
    spread = [int(lengths[i].max() - lengths[i].min()) for i in a if len(i) > 1]
    assert sum(spread) / len(spread) < 5  # buckets hold similar lengths (random batches: ~30)
