"""pipeline.progress: bounded-rate progress lines, the JSON progress record, job states."""

import json
import os
import signal
from pathlib import Path

import pytest

from pipeline import progress as P


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_lines_come_at_the_configured_rate_without_carriage_returns(tmp_path):
    clock, lines = FakeClock(), []
    p = P.Progress(1000, "train_member seed=0 epoch 2/5", log=lines.append, every=10.0,
                   record=tmp_path / "r.json", clock=clock)  # fmt: skip
    for step in range(35):  # one step a second, 20 examples a step
        clock.t += 1.0
        p.update(20, loss=2.0 - 0.01 * step)
    assert len(lines) == 3 and p.lines == 3  # after 10, 20 and 30 seconds
    assert not any("\r" in line or "\n" in line for line in lines)
    last = lines[-1]
    assert last.startswith("train_member seed=0 epoch 2/5:  60% 600/1000 ex [00:30<00:20")
    assert "20.00ex/s" in last and "loss=1.71" in last
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["done"] == 600 and record["total"] == 1000 and record["state"] == "running"
    assert record["eta_s"] == pytest.approx(20.0) and record["pid"] == os.getpid()


def test_a_resumed_epoch_counts_its_earlier_units_but_not_in_the_rate(tmp_path):
    """``done``: a job resumed at 400 of 1,000 examples shows 400 done at once, and its rate
    and ETA come from the examples it trains itself."""
    clock, lines = FakeClock(), []
    p = P.Progress(1000, "distill end seed=0 epoch 3/3", log=lines.append, every=10.0,
                   record=tmp_path / "r.json", clock=clock, done=400)  # fmt: skip
    for _ in range(10):
        clock.t += 1.0
        p.update(20)
    assert lines[-1].startswith("distill end seed=0 epoch 3/3:  60% 600/1000 ex [00:10<00:20")
    assert "20.00ex/s" in lines[-1]
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["done"] == 600 and record["rate"] == pytest.approx(20.0)
    assert record["eta_s"] == pytest.approx(20.0)


def test_environment_sets_the_interval(monkeypatch):
    monkeypatch.setenv(P.EVERY_ENV, "2.5")
    assert P.every_seconds() == 2.5 and P.Progress(10, "x").every == 2.5


def test_job_record_follows_the_job(tmp_path):
    record = tmp_path / "progress" / "train_member" / "seed0.json"
    with P.job("train_member seed=0", record) as job:
        assert job.record == record and P.JOB.name == "train_member seed=0"
        assert json.loads(record.read_text())["state"] == "running"
        P.Progress(10, "x", every=0).update(5)
    assert json.loads(record.read_text())["state"] == "done"
    with pytest.raises(ValueError), P.job("evaluate x", record):
        raise ValueError("no such split")
    rec = json.loads(record.read_text())
    assert rec["state"] == "failed" and "no such split" in rec["error"]


def test_sigterm_leaves_the_record_stopped(tmp_path):
    """What SLURM sends at a time limit or scancel: the job ends with status 143, its record
    says stopped (the checkpoint, written per epoch, is what resumes it)."""
    record = tmp_path / "r.json"
    with pytest.raises(SystemExit) as exit_info, P.job("train_member seed=1", record):
        os.kill(os.getpid(), signal.SIGTERM)
    assert exit_info.value.code == 143
    assert json.loads(record.read_text())["state"] == "stopped"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back


def test_records_live_beside_the_logs():
    assert P.record_for("results/smoke/logs/distill/pd_end2/seed0.log") == Path(
        "results/smoke/progress/distill/pd_end2/seed0.json"
    )
    assert P.record_for("/r/V500/logs/cache_teacher.log") == Path(
        "/r/V500/progress/cache_teacher.json"
    )
