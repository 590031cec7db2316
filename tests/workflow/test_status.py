"""``python -m pipeline.status`` on a copy of the smoke run: finished jobs, a running job (its
progress and ETA) and a killed one (with the last line of its log)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pipeline.progress import EVERY_ENV, record_for
from tests.workflow.helpers import REPO, write_config

pytestmark = pytest.mark.slow


def status(cfgfile) -> dict[str, dict]:
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.status", "--configfile", str(cfgfile), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return {j["job"]: j for j in map(json.loads, r.stdout.splitlines())}


def start_member(results, seed: int):
    """The train stage as rule train_member runs it (log and progress record in place)."""
    meta = json.loads((results / f"members/seed{seed}/model.json").read_text())
    cfg = {k: v for k, v in meta["config"].items() if k != "device"}
    cfg["epochs"] = 50  # long enough to be caught in its first epochs
    log = results / f"logs/train_member/seed{seed}.log"
    (results / f"members/seed{seed}/model.safetensors").unlink()  # as if never finished
    args = ["--task", "image", "--data", results / "data", "--seed", seed, "--config-json",
            json.dumps(cfg), "--out", results / f"members/seed{seed}/model.safetensors",
            "--ckpt", results / f"checkpoints/members/seed{seed}.pt", "--device", "cpu",
            "--threads", 1, "--progress", record_for(log)]  # fmt: skip
    with open(log, "w") as out:
        job = subprocess.Popen(
            [sys.executable, "-m", "pipeline.stages.train", *map(str, args)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, EVERY_ENV: "0.05"},
        )  # fmt: skip
    record = record_for(log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until it reports progress inside its first epoch
        now = json.loads(record.read_text()) if record.is_file() else {}
        if now.get("pid") == job.pid and now.get("done"):  # not the finished run's record
            break
        time.sleep(0.05)
    return job


def test_status_reports_done_running_killed_and_outdated_jobs(smoke, tmp_path):
    cfg, _, results = smoke
    r = tmp_path / "r"
    shutil.copytree(results, r)
    cfgfile = write_config({**cfg, "results": str(r)}, tmp_path / "c.yaml")
    before = status(cfgfile)
    assert {j["state"] for j in before.values()} == {"done"}
    assert "train_member seed0" in before and "distill pd_end2/seed0" in before

    running = start_member(r, 1)
    running.send_signal(signal.SIGSTOP)  # alive, in the middle of an epoch
    killed = start_member(r, 2)
    killed.kill()  # SIGKILL: no chance to write anything
    killed.wait()
    try:
        now = status(cfgfile)
    finally:
        running.kill()
        running.wait()
    assert now["train_member seed0"]["state"] == "done"
    assert now["train_member seed1"]["state"] == "running"
    assert now["train_member seed1"]["progress"].startswith("epoch ")
    assert "/50 " in now["train_member seed1"]["progress"]
    assert "ETA " in now["train_member seed1"]["progress"]
    assert now["train_member seed2"]["state"] == "killed"
    assert now["train_member seed2"]["detail"].startswith("train_member seed=2 epoch ")
    assert now["prepare_data"]["state"] == "done"
