"""Token-level models: logits of non-padding positions only, length-bucketed batches, students'
losses from the online teacher, resumable deterministic training."""

import json
import math

import pytest
import torch

from pipeline import dirichlet as Dir
from pipeline import lm
from pipeline.io import atomic_save
from pipeline.train import STOP_AFTER_ENV, Interrupted


def fake_corpus(path, n=60, vocab_words=40, seed=0):
    """A prepared-corpus directory (manifest + splits) of random sequences."""
    g = torch.Generator().manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, count in (("train", n), ("val", 12)):
        lengths = torch.randint(2, 9, (count,), generator=g)
        tokens = torch.randint(2, vocab_words, (int(lengths.sum()),), generator=g).int()
        ends = torch.cumsum(lengths, 0)
        tokens[ends - 1] = 1  # EOS
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), ends])
        atomic_save({"tokens": tokens, "offsets": offsets}, path / f"{split}.safetensors")
        splits[split] = {"n": count, "tokens": int(lengths.sum()), "sha256": f"{split}-{seed}"}
    (path / "manifest.json").write_text(json.dumps({"task": "text", "splits": splits}))
    return path


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


@pytest.mark.parametrize("method", ["end", "end2", "pd_end2", "pd_fkl"])
def test_student_loss_is_the_method_loss_on_the_members_statistics(method):
    g = torch.Generator().manual_seed(2)
    members = [torch.randn(23, 50, generator=g) * 3 for _ in range(3)]
    z = torch.randn(23, 50, generator=g, dtype=torch.float64)
    options = {"model_offset": 0.0} if method == "end2" else {}
    got = lm.student_loss(method, options, z, members, epoch=0)
    ref_stats = Dir.teacher_stats(torch.stack(members, 1).double())
    ref = {
        "end": lambda: Dir.end_loss(z, ref_stats),
        "end2": lambda: Dir.end2_loss(z, ref_stats, 0.0),
        "pd_end2": lambda: Dir.proxy_rkl_loss(z, ref_stats),
        "pd_fkl": lambda: Dir.proxy_fkl_loss(z, ref_stats),
    }[method]()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_end2_temperature_schedule_retempers_members():
    g = torch.Generator().manual_seed(4)
    members = [torch.randn(5, 9, generator=g) for _ in range(2)]
    z = torch.randn(5, 9, generator=g, dtype=torch.float64)
    opts = {"model_offset": 0.0, "temperature": {"initial": 3.0, "hold_epochs": 1}}
    hot = lm.student_loss("end2", opts, z, members, epoch=0)
    ref = Dir.end2_loss(z, torch.stack(members, 1).double(), 0.0, temperature=3.0)
    torch.testing.assert_close(hot, ref, rtol=1e-5, atol=1e-6)
    cold = lm.student_loss("end2", opts, z, members, epoch=5)
    ref_cold = Dir.end2_loss(z, torch.stack(members, 1).double(), 0.0)
    torch.testing.assert_close(cold, ref_cold, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown method"):
        lm.student_loss("ce", {}, z, members, 0)


CFG = {
    "model": {"name": "lstm", "dim": 8, "layers": 1, "dropout": 0.0},
    "epochs": 2,
    "batch_size": 8,
    "lr": 0.01,
    "device": "cpu",
}


def test_member_and_student_train_resume_bit_identically(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    data = fake_corpus(tmp_path / "data")
    m = tmp_path / "m0.safetensors"
    h = lm.train_member(data, 20, CFG, 0, m, tmp_path / "m0.pt", log=lambda s: None)
    assert len(h) == 2 and h[0]["train_tokens"] > 0 and 0 <= h[-1]["val_acc"] <= 1
    scfg = {**CFG, "method": "pd_end2", "options": {}, "train_sentences": 40}
    full = tmp_path / "full.safetensors"
    lm.train_student(data, 20, [m], scfg, 1, full, tmp_path / "full.pt", log=lambda s: None)
    # interrupted after epoch 1, then resumed from the checkpoint
    part = tmp_path / "part.safetensors"
    monkeypatch.setenv(STOP_AFTER_ENV, "1")
    with pytest.raises(Interrupted):
        lm.train_student(data, 20, [m], scfg, 1, part, tmp_path / "part.pt", log=lambda s: None)
    monkeypatch.delenv(STOP_AFTER_ENV)
    hist = lm.train_student(data, 20, [m], scfg, 1, part, tmp_path / "part.pt", log=print)
    assert 0 <= hist[-1]["val_agreement"] <= 1
    a, _ = lm.load_lm(full)
    b, meta = lm.load_lm(part)
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(va, vb), k
    assert meta["method"] == "pd_end2" and meta["vocab_size"] == 20
    # a student needs members trained at its V
    with pytest.raises(ValueError, match="V=20"):
        lm.train_student(data, 30, [m], scfg, 1, part, tmp_path / "x.pt", log=lambda s: None)
