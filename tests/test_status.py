"""pipeline.status.job_status on hand-made logs and progress records: a job that has started
but written no record yet is running, not failed; a record an earlier attempt left is not the
new attempt's state. (The whole command on a real run: tests/workflow/test_status.py.)"""

import json
import os
import time

from pipeline import status as S
from pipeline.progress import record_for

MISSING = [{"status": "missing", "plan": "update pending"}]


def _job(tmp_path, text=None, record=None, age=0.0):
    """A job's log (``text``, last written ``age`` seconds ago) and progress ``record``."""
    log = tmp_path / "results/run/logs/train_member/seed0.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if text is not None:
        log.write_text(text)
        then = time.time() - age
        os.utime(log, (then, then))
    if record is not None:
        path = record_for(log)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    return str(log)


def test_a_job_without_a_record_runs_while_its_shell_does(tmp_path):
    log = _job(tmp_path, "")
    shell = f"/bin/bash -c set -euo pipefail; python -m pipeline.stages.train ... > {log} 2>&1"
    here = S.job_status("train_member", log, MISSING, commands=["snakemake", shell])
    assert (here.state, here.detail) == ("running", "started, no progress record yet")
    other = log.replace("seed0.log", "seed10.log")  # another job's log is not this one's
    assert S._runs_here(log, [shell]) and not S._runs_here(other, [shell])
    made = [{"status": "updated input files", "plan": "update pending"}]  # not started yet
    assert S.job_status("train_member", log, made, commands=["snakemake"]).state == "outdated"


def test_a_job_without_a_record_and_no_process_here(tmp_path):
    log = _job(tmp_path, "")  # just started on another host: nothing printed yet
    assert S.job_status("train_member", log, MISSING, commands=[]).state == "running"
    log = _job(tmp_path, "", age=S.STALE_AFTER + 10)  # never got going
    assert S.job_status("train_member", log, MISSING, commands=[]).state == "failed"
    error = "error: results/x: does not match the sha256"
    log = _job(tmp_path, error + "\n")
    failed = S.job_status("train_member", log, MISSING, commands=[])
    assert (failed.state, failed.detail) == ("failed", error)


def test_an_earlier_attempts_record_is_not_the_new_attempts_state(tmp_path):
    old = {"state": "failed", "error": "training diverged", "updated": time.time() - 600}
    log = _job(tmp_path, "", record=old)  # the retry truncated the log; no record of its own yet
    assert S.job_status("train_member", log, MISSING, commands=[]).state == "running"
    mine = {**old, "updated": time.time()}  # written after the log's last line: this attempt's
    log = _job(tmp_path, "Traceback ...\n", record=mine, age=1.0)
    failed = S.job_status("train_member", log, MISSING, commands=[])
    assert (failed.state, failed.detail) == ("failed", "training diverged")
