"""Members and students of the token task through the shared stages: resumable, bit-identical."""

import json

import pytest
import torch

from pipeline.engine import STOP_AFTER_ENV, Interrupted
from pipeline.stages.distill import distill
from pipeline.stages.train import train_member
from pipeline.tasks.text import model as lm
from pipeline.tasks.text import teacher as TT
from tests.conftest import TEXT_CFG, fake_corpus

CFG = TEXT_CFG


def test_member_and_student_train_resume_bit_identically(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    data = fake_corpus(tmp_path / "data")
    m = tmp_path / "m0.safetensors"
    h = train_member("text", data, CFG, 0, m, tmp_path / "m0.pt", 20, log=lambda s: None)
    assert len(h) == 2 and 0 <= h[-1]["val_acc"] <= 1
    manifest = json.loads((data / "manifest.json").read_text())
    assert h[0]["train_samples"] == manifest["splits"]["train"]["tokens"]  # every target token
    teacher = tmp_path / "teacher"
    TT.build_teacher(data, 20, [m], teacher)
    scfg = {**CFG, "method": "pd_end2", "options": {}, "train_sentences": 40}
    full = tmp_path / "full.safetensors"
    distill("text", data, teacher, [m], scfg, 1, full, tmp_path / "full.pt", 20, lambda s: None)
    # interrupted after epoch 1, then resumed from the checkpoint
    part = tmp_path / "part.safetensors"
    monkeypatch.setenv(STOP_AFTER_ENV, "1")
    with pytest.raises(Interrupted):
        distill("text", data, teacher, [m], scfg, 1, part, tmp_path / "part.pt", 20, lambda s: None)
    monkeypatch.delenv(STOP_AFTER_ENV)
    hist = distill("text", data, teacher, [m], scfg, 1, part, tmp_path / "part.pt", 20, print)
    assert 0 <= hist[-1]["val_agreement"] <= 1
    a, _ = lm.load_lm(full)
    b, meta = lm.load_lm(part)
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(va, vb), k
    assert meta["method"] == "pd_end2" and meta["vocab_size"] == 20
    # a student needs members (and a teacher cache) at its V
    with pytest.raises(ValueError, match="V=20"):
        distill("text", data, teacher, [m], scfg, 1, part, tmp_path / "x.pt", 30, lambda s: None)
