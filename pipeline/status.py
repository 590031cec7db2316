"""Where a run stands: one line per job of the workflow (done, running with its progress and
ETA, failed or killed with the last line of its log, outdated, not started).

    python -m pipeline.status [--configfile config/smoke.yaml] [--json]

The job list and what is up to date come from Snakemake itself (``snakemake --summary``, which
takes no lock, so this runs beside a live run, e.g. on a login node while SLURM runs the jobs);
what a started job is doing comes from the files it writes: its progress record
(``<run>/progress/<rule>/<job>.json``, :mod:`pipeline.progress`) and its log. Torch-free.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from pipeline.progress import DEFAULT_EVERY, record_for

REPO = Path(__file__).resolve().parents[1]
STALE_AFTER = 4 * DEFAULT_EVERY + 60  # seconds without an update: a job on another host is lost
RECORD_SLACK = 5.0  # a finished record this much older than its log is an earlier attempt's


@dataclass
class JobStatus:
    job: str  # the rule and the job's name (its log path below logs/)
    state: str  # done | running | failed | stopped | killed | lost | outdated | not started
    progress: str = ""  # "epoch 2/5 38% ETA 00:19 loss=0.53"
    detail: str = ""  # the error or the last log line


def _snakemake(args: list[str], configfile: str | None, cwd: Path) -> str:
    cmd = ["snakemake", *args, "--nolock"]
    if configfile:
        cmd += ["--configfile", str(configfile)]
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{(r.stdout + r.stderr)[-3000:]}")
    return r.stdout + r.stderr


def workflow_jobs(configfile: str | None, cwd: Path = REPO) -> list[dict]:
    """Every job of the workflow, done or not: ``{"rule", "outputs", "log"}`` from the job
    blocks of a forced dry run (``snakemake -n --forceall``: it lists every job, runs none)."""
    jobs, current = [], None
    for line in _snakemake(["-n", "--forceall"], configfile, cwd).splitlines():
        head = re.match(r"^(?:local)?rule (\w+):$", line)
        if head:
            current = {"rule": head[1], "outputs": [], "log": ""}
            jobs.append(current)
        elif current is not None and line.startswith("    output: "):
            current["outputs"] = [x.strip() for x in line[12:].split(",")]
        elif current is not None and line.startswith("    log: "):
            current["log"] = line[9:].split(",")[0].strip()
    return [j for j in jobs if j["rule"] != "all"]


def summary(configfile: str | None, cwd: Path = REPO) -> dict[str, dict]:
    """``snakemake --summary`` by output file: its ``status`` (ok, missing, updated input
    files...) and ``plan`` (no update, update pending)."""
    lines = [x for x in _snakemake(["--summary"], configfile, cwd).splitlines() if "\t" in x]
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]
    return {r["output_file"]: r for r in rows}


def last_line(path: Path) -> str:
    if not path.is_file():
        return ""
    lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    return lines[-1][-200:] if lines else ""


def local_commands() -> list[str]:
    """The command lines of this host's processes (Linux ``/proc``; none elsewhere)."""
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            out.append(
                (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            )
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return out


def _runs_here(log: str, commands: list[str]) -> bool:
    """Whether a process of this host writes ``log`` (a job's shell: ``... > <log> 2>&1``)."""
    pattern = re.compile(rf"(^|[\s'\"=>]){re.escape(log)}($|[\s'\"])")
    return any(pattern.search(c) for c in commands)


def _alive(record: dict) -> bool | None:
    """Whether the record's process runs (``None``: it runs on another host, unknown)."""
    if record.get("host") != socket.gethostname() or not record.get("pid"):
        return None
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def progress_text(record: dict) -> str:
    parts = []
    if record.get("epochs"):
        parts.append(f"epoch {record['epoch']}/{record['epochs']}")
    if record.get("total"):
        parts.append(f"{100 * record.get('done', 0) / record['total']:.0f}%")
        eta = record.get("job_eta_s")
        eta = record.get("eta_s") if eta is None else eta
        parts.append(f"ETA {'?' if eta is None else tqdm.format_interval(eta)}")
    if record.get("loss") is not None:
        parts.append(f"loss={record['loss']:.4g}")
    return " ".join(parts)


def job_status(
    rule: str,
    log: str,
    rows: list[dict],
    now: float | None = None,
    commands: list[str] | None = None,
) -> JobStatus:
    """The state of one job from its summary rows, progress record and log (and ``commands``,
    this host's process command lines, for a job that has not written its record yet)."""
    now = time.time() if now is None else now
    name = job_name(rule, log)
    if all(r["status"] == "ok" and r["plan"] == "no update" for r in rows):
        return JobStatus(name, "done")
    made = all(r["status"] != "missing" for r in rows)
    record_path = record_for(log) if log else None
    record = {}
    if record_path is not None and record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except ValueError:
            record = {}
    tail = last_line(Path(log)) if log else ""
    log_time = Path(log).stat().st_mtime if log and Path(log).is_file() else None
    state = record.get("state")
    if state not in (None, "running") and log_time is not None:
        if float(record.get("updated", 0)) < log_time - RECORD_SLACK:
            record, state = {}, None  # an earlier attempt's end: this one has none yet
    if state is None and log_time is not None and not made:
        # started (Snakemake removed its outputs), no record yet (Python and torch still
        # loading), or a rule that keeps none
        started = JobStatus(name, "running", "", tail or "started, no progress record yet")
        if _runs_here(log, local_commands() if commands is None else commands):
            return started
        if not tail and now - log_time < STALE_AFTER:  # on another host, nothing printed yet
            return started
    if state == "running":
        alive = _alive(record)
        fresh = now - float(record.get("updated", 0)) < STALE_AFTER
        if alive or (alive is None and fresh):
            return JobStatus(name, "running", progress_text(record), tail)
        return JobStatus(name, "killed" if alive is False else "lost", progress_text(record), tail)
    if state in ("failed", "stopped"):
        return JobStatus(name, state, progress_text(record), record.get("error") or tail)
    if made:
        why = next((r["status"] for r in rows if r["status"] != "ok"), "an input will be rebuilt")
        return JobStatus(name, "outdated", "", why)
    if log and Path(log).is_file():
        return JobStatus(name, "failed", "", tail)
    return JobStatus(name, "not started")


def job_name(rule: str, log: str) -> str:
    """``train_member seed0``, ``distill pd_end2/seed0``, ``evaluate V500 ensemble``: the rule,
    the sub-run of a class-count sweep, and the job's log path below ``logs/<rule>/``."""
    if not log:
        return rule
    parts = Path(log).with_suffix("").parts
    i = len(parts) - 1 - parts[::-1].index("logs")
    rest = parts[i + 1 :]
    rest = rest[1:] if rest and rest[0] == rule else rest
    sub = [parts[i - 1]] if i > 0 and re.fullmatch(r"V\d+", parts[i - 1]) else []
    return " ".join([rule, *sub, "/".join(rest)]).strip()


def status(configfile: str | None = None, cwd: Path = REPO) -> list[JobStatus]:
    """Every job of the run of ``configfile``: running and failed ones first."""
    rows = summary(configfile, cwd)
    missing = {"status": "missing", "plan": "update pending"}
    commands = local_commands()
    out = [
        job_status(
            j["rule"], j["log"], [rows.get(o, missing) for o in j["outputs"]], commands=commands
        )
        for j in workflow_jobs(configfile, cwd)
    ]
    order = ["running", "failed", "killed", "lost", "stopped", "outdated", "not started", "done"]
    return sorted(out, key=lambda j: order.index(j.state))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", default=None, help="the run's config (default: config.yaml)")
    ap.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    args = ap.parse_args()
    jobs = status(args.configfile)
    if args.json:
        for j in jobs:
            print(json.dumps(asdict(j)))
        return
    width = max(len(j.job) for j in jobs)
    for j in jobs:
        print(f"{j.job:<{width}}  {j.state:<11}  {j.progress:<36}  {j.detail}".rstrip())
    counts = {s: sum(j.state == s for j in jobs) for s in dict.fromkeys(j.state for j in jobs)}
    print(", ".join(f"{n} {s}" for s, n in counts.items()), file=sys.stderr)


if __name__ == "__main__":
    main()
