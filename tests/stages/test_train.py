"""Stage train: members through the shared engine — resumable, deterministic, seeded."""

import pytest
import torch

from pipeline import engine as E
from pipeline.stages.train import train_member
from tests.conftest import MEMBER_CFG


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_interrupted_training_resumes_to_identical_weights(prepared, tmp_path, monkeypatch):
    cfg = {**MEMBER_CFG, "epochs": 3, "augment": True}
    train_member(
        "image",
        prepared,
        cfg,
        5,
        tmp_path / "a/model.safetensors",
        tmp_path / "a.pt",
        log=lambda s: None,
    )
    monkeypatch.setenv(E.STOP_AFTER_ENV, "1")
    logs = []
    with pytest.raises(E.Interrupted):
        train_member(
            "image",
            prepared,
            cfg,
            5,
            tmp_path / "b/model.safetensors",
            tmp_path / "b.pt",
            log=logs.append,
        )
    assert not (tmp_path / "b/model.safetensors").exists()  # no output from a killed run
    assert torch.load(tmp_path / "b.pt", weights_only=True)["epoch"] == 1
    monkeypatch.delenv(E.STOP_AFTER_ENV)
    logs.clear()
    hist = train_member(
        "image",
        prepared,
        cfg,
        5,
        tmp_path / "b/model.safetensors",
        tmp_path / "b.pt",
        log=logs.append,
    )
    assert any("resuming" in line and "after epoch 1/3" in line for line in logs)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    a, b = _weights(tmp_path / "a/model.safetensors"), _weights(tmp_path / "b/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stale_checkpoint_is_ignored(prepared, tmp_path):
    cfg = {**MEMBER_CFG, "epochs": 1}
    train_member(
        "image", prepared, cfg, 0, tmp_path / "m.safetensors", tmp_path / "c.pt", log=lambda s: None
    )
    logs = []
    train_member(
        "image",
        prepared,
        {**cfg, "lr": 0.03},
        0,
        tmp_path / "m.safetensors",
        tmp_path / "c.pt",
        log=logs.append,
    )
    assert any("ignoring stale checkpoint" in line for line in logs)


def test_different_seeds_give_different_members(members):
    a, b = _weights(members[0]), _weights(members[1])
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_member_learns_the_toy_task(members):
    import json

    meta = json.loads(members[0].with_suffix(".json").read_text())
    assert meta["history"][-1]["val_acc"] > 0.5
    assert meta["config"]["model"]["name"] == "small_cnn" and "code_version" in meta
