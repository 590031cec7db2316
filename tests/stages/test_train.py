"""Stage train: members through the shared engine — resumable, deterministic, seeded."""

import json

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
    # a finished job leaves no checkpoint: nothing can resume its end state later
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "b.pt").exists()


def _interrupted_then_rerun(prepared, tmp_path, monkeypatch, cfg, change=None):
    """Train 2 epochs stopped after the first, apply ``change`` (to the config, the code
    fingerprint or the checkpoint), rerun to the end; returns the rerun's log."""
    out, ckpt = tmp_path / "m.safetensors", tmp_path / "c.pt"
    monkeypatch.setenv(E.STOP_AFTER_ENV, "1")
    with pytest.raises(E.Interrupted):
        train_member("image", prepared, cfg, 0, out, ckpt, log=lambda s: None)
    monkeypatch.delenv(E.STOP_AFTER_ENV)
    cfg = change(cfg, ckpt) if change else cfg
    logs = []
    train_member("image", prepared, cfg, 0, out, ckpt, log=logs.append)
    return logs, out


def test_changed_config_never_resumes_a_checkpoint(prepared, tmp_path, monkeypatch):
    cfg = {**MEMBER_CFG, "epochs": 2}
    logs, _ = _interrupted_then_rerun(
        prepared, tmp_path, monkeypatch, cfg, lambda c, _: {**c, "lr": 0.03}
    )
    assert any("ignoring stale checkpoint" in line for line in logs)
    assert not any("resuming" in line for line in logs)


def test_changed_code_never_resumes_a_checkpoint(prepared, tmp_path, monkeypatch):
    from pipeline.stages import train as stage

    def edit_code(cfg, _):
        monkeypatch.setattr(stage, "code_fingerprint", lambda *a: "other code")
        return cfg

    cfg = {**MEMBER_CFG, "epochs": 2}
    logs, _ = _interrupted_then_rerun(prepared, tmp_path, monkeypatch, cfg, edit_code)
    assert any("ignoring stale checkpoint" in line for line in logs)


def test_corrupt_checkpoint_is_trained_over(prepared, tmp_path, monkeypatch):
    def truncate(cfg, ckpt):
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
        return cfg

    cfg = {**MEMBER_CFG, "epochs": 2}
    logs, out = _interrupted_then_rerun(prepared, tmp_path, monkeypatch, cfg, truncate)
    assert any("ignoring unreadable checkpoint" in line for line in logs)
    clean = tmp_path / "clean.safetensors"
    train_member("image", prepared, cfg, 0, clean, tmp_path / "x.pt", log=lambda s: None)
    a, b = _weights(out), _weights(clean)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same as a run that never had one


def test_different_seeds_give_different_members(members):
    a, b = _weights(members[0]), _weights(members[1])
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_member_learns_the_toy_task(members):
    import json

    meta = json.loads(members[0].with_suffix(".json").read_text())
    assert meta["history"][-1]["val_acc"] > 0.5
    assert meta["config"]["model"]["name"] == "small_cnn" and "code_sha256" in meta


def test_training_reports_progress_and_writes_tensorboard(prepared, tmp_path, monkeypatch):
    """Progress lines inside every epoch at the configured rate (here: every step) and a
    TensorBoard run that tensorboard's own reader opens, holding the learning curves."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pipeline import progress as P

    monkeypatch.setenv(P.EVERY_ENV, "0")
    cfg = {**MEMBER_CFG, "epochs": 2}
    lines = []
    board = tmp_path / "tb" / "members" / "seed0"
    with P.job("train_member seed=0", tmp_path / "p.json", board):
        train_member("image", prepared, cfg, 0, tmp_path / "m.safetensors", tmp_path / "c.pt",
                     log=lines.append)  # fmt: skip
    steps = -(-500 // cfg["batch_size"])  # 500 training images
    progress = [x for x in lines if x.startswith("train_member seed=0 epoch ")]
    assert len(progress) == 2 * steps
    assert progress[steps - 1].startswith("train_member seed=0 epoch 1/2: 100% 500/500 ex [")
    assert "loss=" in progress[0] and "ex/s" in progress[0]
    events = EventAccumulator(str(board))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"epoch/train_loss", "epoch/lr", "epoch/val_acc", "epoch/val_nll"} <= tags
    assert {"epoch/examples_per_s", "step/train_loss"} <= tags
    assert [e.step for e in events.Scalars("epoch/val_acc")] == [steps, 2 * steps]
    assert len(events.Scalars("step/train_loss")) == 2 * steps
    assert json.loads((tmp_path / "p.json").read_text())["state"] == "done"

    # stopped after epoch 1 and resumed: epoch 1's events stay, none are logged twice
    resumed = tmp_path / "tb" / "members" / "seed1"
    monkeypatch.setenv(E.STOP_AFTER_ENV, "1")
    for _ in range(2):
        with P.job("train_member seed=0", tmp_path / "q.json", resumed):
            try:
                train_member("image", prepared, cfg, 0, tmp_path / "r.safetensors",
                             tmp_path / "r.pt", log=lambda s: None)  # fmt: skip
            except E.Interrupted:
                monkeypatch.delenv(E.STOP_AFTER_ENV)
    again = EventAccumulator(str(resumed))
    again.Reload()
    for tag in ("epoch/val_acc", "step/train_loss"):
        assert [e.step for e in again.Scalars(tag)] == [e.step for e in events.Scalars(tag)]
