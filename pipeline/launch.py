"""Start a stage as one process or as a data-parallel job (what the rules run)::

    python -m pipeline.launch --processes P --nodes N -- pipeline.stages.train --task ...

* ``P x N = 1``: the stage itself (``python -m <stage> ...``), exactly as without the launcher;
* inside a SLURM job of at least ``P x N`` tasks (the SLURM profile submits such jobs with
  ``--ntasks-per-node P --nodes N``): ``srun`` starts one rank per task, which finds its rank
  and the rendezvous (the job's first node) in the SLURM environment
  (:mod:`pipeline.distributed`);
* otherwise, on one node (a workstation, or a one-task SLURM job): ``torchrun --standalone
  --nproc-per-node P``.

Multi-node jobs need the SLURM path. The launcher imports nothing heavy and replaces itself with
the command (``exec``), so exit codes and signals reach the stage unchanged.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

SRUN_ENV = "PROXY_END2_SRUN"  # tells the ranks that srun (not torchrun) placed them
GROUP_ENV = "PROXY_END2_PROCESS_GROUP"
"""``1``: a job of one process still runs through torchrun and joins a process group of one,
training data-parallel (DDP; NCCL on a GPU): how one GPU checks the data-parallel path."""


def slurm_tasks(env: dict) -> int:
    """Tasks of the SLURM job ``SLURM_JOB_ID`` (``scontrol``). Snakemake's job step clears the
    job's ``SLURM_NTASKS`` & co. from the environment of the rule's command, so the allocation
    is asked for; without scontrol, ``SLURM_NTASKS`` (else 1)."""
    try:
        shown = subprocess.run(
            ["scontrol", "show", "job", "-o", env["SLURM_JOB_ID"]],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return int(env.get("SLURM_NTASKS", "1"))
    found = re.search(r"\bNumTasks=(\d+)", shown)
    return int(found.group(1)) if found else int(env.get("SLURM_NTASKS", "1"))


def command(processes: int, nodes: int, module: str, args: list[str], env: dict) -> list[str]:
    """The command line that runs ``python -m module args`` as ``processes x nodes`` ranks."""
    if processes < 1 or nodes < 1:
        raise ValueError(f"processes and nodes must be >= 1, got {processes} and {nodes}")
    world = processes * nodes
    if world == 1 and env.get(GROUP_ENV) != "1":
        return [sys.executable, "-m", module, *args]
    if env.get("SLURM_JOB_ID") and slurm_tasks(env) >= world:
        step = [f"--ntasks={world}", f"--ntasks-per-node={processes}", f"--nodes={nodes}"]
        return ["srun", *step, "--kill-on-bad-exit=1", sys.executable, "-m", module, *args]
    if nodes > 1:
        have = f"{slurm_tasks(env)} task(s)" if env.get("SLURM_JOB_ID") else "no SLURM job"
        raise ValueError(
            f"{nodes} nodes need a SLURM job of {world} tasks (snakemake --profile "
            f"profiles/slurm); here there is {have}"
        )
    torchrun = shutil.which("torchrun") or "torchrun"
    return [torchrun, "--standalone", f"--nproc-per-node={processes}", "-m", module, *args]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, default=1, help="processes (ranks) per node")
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("module", help="the stage module, e.g. pipeline.stages.train")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="the stage's arguments")
    a = ap.parse_args(argv)
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    try:
        cmd = command(a.processes, a.nodes, a.module, args, dict(os.environ))
    except ValueError as err:
        ap.error(str(err))
    env = dict(os.environ)
    if cmd[0] == "srun":
        env[SRUN_ENV] = "1"
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
