"""scripts/gpu_check.sh on its CPU path (what runs here, without a GPU): every step runs and
passes at toy sizes, so the script a GPU owner runs does not rot (issue 31)."""

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_its_cpu_path(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run(["bash", "scripts/gpu_check.sh", str(out)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=1200)  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    logs = {p.name: p.read_text()[-1500:] for p in out.glob("*.log")}
    assert r.returncode == 0 and summary["passed"], (r.stdout[-2000:], logs)
    assert set(summary["steps"]) == {"smoke", "online", "ddp", "losses"}
    assert summary["machine"]["device"] == "cpu"
    assert "process group: backend=gloo world=1" in (out / "ddp.stage.log").read_text()
    assert "online teacher: 1 students" in (out / "online.log").read_text()  # CPU: one
    assert "K=1000" in (out / "losses.log").read_text()
    assert "| ddp | PASS |" in (out / "summary.md").read_text()
