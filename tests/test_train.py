import pytest
import torch

from pipeline import train as T
from pipeline.distill import temperature_at
from tests.conftest import MEMBER_CFG


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_interrupted_training_resumes_to_identical_weights(prepared, tmp_path, monkeypatch):
    cfg = {**MEMBER_CFG, "epochs": 3, "augment": True}
    T.train_member(
        prepared, cfg, 5, tmp_path / "a/model.safetensors", tmp_path / "a.pt", log=lambda s: None
    )
    monkeypatch.setenv(T.STOP_AFTER_ENV, "1")
    logs = []
    with pytest.raises(T.Interrupted):
        T.train_member(
            prepared, cfg, 5, tmp_path / "b/model.safetensors", tmp_path / "b.pt", log=logs.append
        )
    assert not (tmp_path / "b/model.safetensors").exists()  # no output from a killed run
    assert torch.load(tmp_path / "b.pt", weights_only=True)["epoch"] == 1
    monkeypatch.delenv(T.STOP_AFTER_ENV)
    logs.clear()
    hist = T.train_member(
        prepared, cfg, 5, tmp_path / "b/model.safetensors", tmp_path / "b.pt", log=logs.append
    )
    assert any("resuming" in line and "after epoch 1/3" in line for line in logs)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    a, b = _weights(tmp_path / "a/model.safetensors"), _weights(tmp_path / "b/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stale_checkpoint_is_ignored(prepared, tmp_path):
    cfg = {**MEMBER_CFG, "epochs": 1}
    T.train_member(
        prepared, cfg, 0, tmp_path / "m.safetensors", tmp_path / "c.pt", log=lambda s: None
    )
    logs = []
    T.train_member(
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


def test_schedules_and_optimizers():
    m = torch.nn.Linear(2, 2)
    for name in ("adamw", "adam", "sgd"):
        T.make_optimizer(m, {"optimizer": name, "lr": 0.1})
    with pytest.raises(ValueError, match="optimizer"):
        T.make_optimizer(m, {"optimizer": "lion", "lr": 0.1})
    opt = T.make_optimizer(m, {"optimizer": "sgd", "lr": 1.0})
    sched = T.make_scheduler(opt, {"epochs": 4, "schedule": "multistep", "milestones": [2]}, 10)
    lrs = []
    for _ in range(40):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == 1.0 and lrs[19] == 1.0 and lrs[20] == pytest.approx(0.1)


def test_end2_temperature_schedule():
    sched = {"initial": 3.0, "hold_epochs": 2, "anneal_epochs": 2}
    assert [temperature_at(e, sched) for e in range(6)] == [3.0, 3.0, 2.0, 1.0, 1.0, 1.0]
    assert temperature_at(0, None) == 1.0


def test_device_and_mixed_precision_choices():
    assert T.select_device("cpu").type == "cpu"
    assert T.amp_enabled(torch.device("cuda"), {}) is True  # CUDA path decided without a GPU
    assert T.amp_enabled(torch.device("cuda"), {"amp": False}) is False
    assert T.amp_enabled(torch.device("cpu"), {"amp": True}) is False
    if not torch.cuda.is_available():
        assert T.select_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="CUDA is not available"):
            T.select_device("cuda")


def test_resource_record(tmp_path):
    import json

    from pipeline.resources import ResourceRecord

    with ResourceRecord(tmp_path / "r.json", "stage", torch.device("cpu")) as rec:
        rec.samples = 100
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["stage"] == "stage" and r["samples"] == 100 and r["wall_s"] > 0
    assert r["peak_gpu_mem_mb"] is None and r["peak_rss_mb"] > 0 and r["samples_per_s"] > 0
