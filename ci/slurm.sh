#!/usr/bin/env bash
# The SLURM path, proven against a real cluster: installs SLURM from Debian's packages, starts a
# single-node cluster on localhost (munge, slurmctld, slurmd; two fake GPUs as gres), runs the
# smoke config through `--profile profiles/slurm` with GPU requests and an injected interruption
# (every training job stops after one epoch, as if killed; the profile's retries resume it),
# and checks that
#   - the jobs really went through SLURM (job ids, squeue's record, GPU requests granted);
#   - interrupted training resumed from its checkpoint instead of restarting;
#   - every table equals a plain local run's;
#   - a data-parallel member (2 SLURM tasks started by srun, gloo) resumes after interruption
#     and equals a local 2-process (torchrun) run bit for bit;
# then stops exactly the daemons it started. Hard timeouts everywhere; never hangs.
# Needs root on Debian/Ubuntu. Usage: bash ci/slurm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
[ "$(id -u)" = 0 ] || { echo "ci/slurm.sh needs root (it installs and starts SLURM)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/proxy-end2-slurm.XXXXXX)
# srun inside batch jobs reads only the default location: put the config there, keeping any
# existing files aside and putting them back on exit
ETC=/etc/slurm
export SLURM_CONF=$ETC/slurm.conf
STARTED_PIDS=()
BACKED_UP=()      # files of $ETC moved aside into $WORK/etc-backup (put back on exit)
WROTE=()          # files this script created (removed on exit): only these, never others
log() { printf '[slurm-ci %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

cleanup() {
  local rc=$?
  set +e
  # cancel only the jobs this script submitted (their ids are in its snakemake log), on the
  # cluster it started (SLURM_CONF is its own config); never every job of the user
  if command -v scancel >/dev/null && [ "${CONF_WRITTEN:-0}" = 1 ]; then
    ids=$(grep -ho 'SLURM jobid [0-9]*' "$WORK"/snakemake-*.log 2>/dev/null | awk '{print $3}' | sort -u)
    [ -n "$ids" ] && timeout 10 scancel $ids >/dev/null 2>&1
  fi
  # munged daemonises through an intermediate process, so its pid is not known at start: none
  # ran before this script started one, so every munged now is this script's
  if [ "${STARTED_MUNGE:-0}" = 1 ]; then
    mapfile -t -O "${#STARTED_PIDS[@]}" STARTED_PIDS < <(pgrep -x munged)
  fi
  for pid in "${STARTED_PIDS[@]}"; do
    kill "$pid" 2>/dev/null
  done
  sleep 1
  for pid in "${STARTED_PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  done
  if [ $rc -ne 0 ]; then
    log "FAILED (exit $rc); daemon logs:"
    tail -n 30 "$WORK"/slurmctld.log "$WORK"/slurmd.log 2>/dev/null
  fi
  for f in "${WROTE[@]}"; do rm -f "$f"; done
  for f in "${BACKED_UP[@]}"; do mv "$WORK/etc-backup/$f" "$ETC/$f"; done
  log "stopped ${#STARTED_PIDS[@]} daemon(s) this script started; work dir $WORK"
  exit $rc
}
trap cleanup EXIT

# ---------------------------------------------------------------- install (idempotent)
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  log "installing SLURM + munge from Debian"
  timeout 300 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi

# ---------------------------------------------------------------- configure
HOST=$(hostname -s)
mkdir -p /run/munge /run/slurm "$WORK"/spool/ctld "$WORK"/spool/d
chown munge:munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then  # a key made here is removed on exit
  WROTE+=(/etc/munge/munge.key)
  timeout 30 mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null \
    || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
for i in 0 1; do  # the fake GPUs: /dev/null's device numbers, root-only, removed on exit
  if [ ! -e /run/fakegpu$i ]; then WROTE+=(/run/fakegpu$i); mknod -m 600 /run/fakegpu$i c 1 3; fi
done
mkdir -p "$ETC" "$WORK/etc-backup"
for f in slurm.conf gres.conf; do  # set aside first; only then is anything written there
  if [ -e "$ETC/$f" ]; then mv "$ETC/$f" "$WORK/etc-backup/$f"; BACKED_UP+=("$f"); fi
done
WROTE+=("$ETC/slurm.conf" "$ETC/gres.conf")
NODE=$(timeout 30 slurmd -C | head -n 1)
MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$NODE")
NODE=$(sed "s/RealMemory=[0-9]*/RealMemory=$((MEM - 2000))/" <<<"$NODE")
CONF_WRITTEN=1
cat > "$SLURM_CONF" <<EOF
ClusterName=proxyend2ci
SlurmctldHost=$HOST
AuthType=auth/munge
SlurmUser=root
SlurmctldPort=6917
SlurmdPort=6918
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
GresTypes=gpu
MinJobAge=3600
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$WORK/spool/ctld
SlurmdSpoolDir=$WORK/spool/d
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
$NODE NodeAddr=127.0.0.1 Gres=gpu:2 State=UNKNOWN
PartitionName=ci Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
echo "NodeName=$HOST Name=gpu File=/run/fakegpu[0-1]" > "$ETC/gres.conf"

# ---------------------------------------------------------------- start the daemons
# a munged that answers is used as it is; otherwise (none, or only a dead one's leftovers) this
# script starts one, and then every munged process is this script's
if ! timeout 5 munge -n >/dev/null 2>&1; then
  timeout 30 runuser -u munge -- /usr/sbin/munged
  STARTED_MUNGE=1
  timeout 10 bash -c 'until munge -n >/dev/null 2>&1; do sleep 0.2; done' \
    || { log "munged did not start"; exit 1; }
fi
for daemon in slurmctld slurmd; do  # each writes its pid file once it is up
  timeout 30 "/usr/sbin/$daemon" -f "$SLURM_CONF"  # daemonises: returns once forked
  for _ in $(seq 50); do [ -s "$WORK/$daemon.pid" ] && break; sleep 0.2; done
  [ -s "$WORK/$daemon.pid" ] || { log "$daemon did not start"; exit 1; }
  STARTED_PIDS+=("$(cat "$WORK/$daemon.pid")")
done
for _ in $(seq 60); do
  state=$(timeout 5 sinfo -h -N -o '%t' 2>/dev/null | head -n 1 || true)
  [ "$state" = idle ] && break
  sleep 0.5
done
[ "$state" = idle ] || { log "node never became idle (state: '$state')"; exit 1; }
log "cluster up: $(sinfo -h -N -o '%N %t cpus=%c gres=%G')"

# ---------------------------------------------------------------- configs and profile
python - "$WORK" <<'PY'
import sys, yaml
work = sys.argv[1]
cfg = yaml.safe_load(open("config/smoke.yaml"))
for name, gpu in (("local", 0), ("slurm", 1)):
    c = dict(cfg, results=f"{work}/results-{name}",
             resources=dict(cfg["resources"], gpu=gpu))  # slurm: every training job asks a GPU
    yaml.safe_dump(c, open(f"{work}/{name}.yaml", "w"))
prof = yaml.safe_load(open("profiles/slurm/config.yaml"))
prof.update({"slurm-init-seconds-before-status-checks": 5, "slurm-keep-successful-logs": True,
             "latency-wait": 5, "jobs": 4, "seconds-between-status-checks": 2})
prof["default-resources"] = prof["default-resources"] + ["slurm_account=root"]
import os; os.makedirs(f"{work}/profile", exist_ok=True)
yaml.safe_dump(prof, open(f"{work}/profile/config.yaml", "w"))
PY

# ---------------------------------------------------------------- run through SLURM
log "smoke config through SLURM (training interrupted after every epoch, resumed by retries)"
PROXY_END2_STOP_AFTER_EPOCH=1 timeout -s INT -k 60 900 \
  snakemake --profile "$WORK/profile" --configfile "$WORK/slurm.yaml" \
  > "$WORK/snakemake-slurm.log" 2>&1 || { tail -n 60 "$WORK/snakemake-slurm.log"; exit 1; }
# what SLURM knows of the jobs, read now: slurmctld forgets a finished job MinJobAge (3600 s) after
# it ends, and the local run below can take longer than that on a loaded machine (3600 s: longer
# than the SLURM run's own 900 s limit, so its first jobs are still known when it ends)
squeue -h -t all -o "%i|%j|%T|%b" > "$WORK/squeue.txt"
scontrol -o show job > "$WORK/scontrol.txt"
log "local reference run"
timeout -s INT -k 60 900 snakemake --cores 2 --configfile "$WORK/local.yaml" \
  > "$WORK/snakemake-local.log" 2>&1 || { tail -n 60 "$WORK/snakemake-local.log"; exit 1; }

# ---------------------------------------------------------------- checks
python - "$WORK" <<'PY'
import glob, re, sys
import numpy as np, pandas as pd
work = sys.argv[1]
out = open(f"{work}/snakemake-slurm.log").read()
ids = set(re.findall(r"submitted with SLURM jobid (\d+)", out))
assert len(ids) >= 10, f"expected SLURM job ids in the snakemake log, found {sorted(ids)}"
q = open(f"{work}/squeue.txt").read().split("\n")  # read right after the SLURM run
rows = [r.split("|") for r in q if r.strip()]
states = {r[0]: r[2] for r in rows}
assert ids <= set(states), f"job ids missing from squeue: {sorted(ids - set(states))}"
assert sum(s == "COMPLETED" for s in states.values()) >= 10, states
shown = open(f"{work}/scontrol.txt").read().splitlines()
gpu_jobs = [line for line in shown if re.search(r"gres[:/]gpu[:=]1", line)]
assert gpu_jobs, "no job asked SLURM for a GPU (gres)"
assert any(s == "FAILED" for s in states.values()), "the injected interruption never happened"
logs = glob.glob(f"{work}/results-slurm/logs/train_member/*.log")
assert logs and all("resuming from" in open(p).read() for p in logs), "members did not resume"
dlogs = glob.glob(f"{work}/results-slurm/logs/distill/*/*.log")
assert dlogs and all("resuming from" in open(p).read() for p in dlogs), "students did not resume"
from pipeline.tables import read_tidy
a = read_tidy(f"{work}/results-slurm/tables/metrics_tidy.csv")
b = read_tidy(f"{work}/results-local/tables/metrics_tidy.csv")
a, b = (t.sort_values(list(t.columns[:-1])).reset_index(drop=True) for t in (a, b))
assert a.drop(columns="value").equals(b.drop(columns="value")), "different metric rows"
np.testing.assert_allclose(a["value"], b["value"], rtol=1e-6, atol=1e-9, equal_nan=True)
print(f"{len(ids)} SLURM jobs ({sum(s == 'FAILED' for s in states.values())} interrupted and "
      f"resumed, {len(gpu_jobs)} with GPU gres); {len(a)} metrics identical to the local run")
PY

# ------------------------------------------ a data-parallel job: one member as 2 SLURM tasks
python - "$WORK" <<'PY'
import sys, yaml
work = sys.argv[1]
cfg = yaml.safe_load(open("config/smoke.yaml"))
ens = {k: v for k, v in cfg["ensemble"].items() if k not in ("optimizer", "weight_decay")}
ens.update(optimizer="sgd", lr=0.05)  # the optimiser tests/test_distributed.py uses
c = dict(cfg, results=f"{work}/results-ddp", ensemble=ens,
         resources=dict(cfg["resources"], gpu=0, processes=2))
yaml.safe_dump(c, open(f"{work}/ddp.yaml", "w"))
PY
log "one member as 2 SLURM tasks (gloo; interrupted after every epoch, resumed by retries)"
PROXY_END2_STOP_AFTER_EPOCH=1 timeout -s INT -k 60 600 \
  snakemake "$WORK/results-ddp/members/seed0/model.safetensors" \
  --profile "$WORK/profile" --configfile "$WORK/ddp.yaml" \
  > "$WORK/snakemake-ddp.log" 2>&1 || { tail -n 60 "$WORK/snakemake-ddp.log"; exit 1; }
scontrol -o show job > "$WORK/scontrol-ddp.txt"
log "the same member as 2 local processes (torchrun), the reference"
python - "$WORK" <<'PY'
import json, subprocess, sys
work = sys.argv[1]
run = f"{work}/results-ddp"
cfg = json.load(open(f"{run}/members/seed0/model.json"))["config"]
cfg.pop("device")
subprocess.run([sys.executable, "-m", "pipeline.launch", "--processes", "2", "--",
                "pipeline.stages.train", "--task", "image", "--data", f"{run}/data", "--seed", "0",
                "--config-json", json.dumps(cfg), "--device", "cpu", "--threads", "1",
                "--out", f"{work}/ddp-torchrun/model.safetensors",
                "--ckpt", f"{work}/ddp-torchrun.pt"], check=True, capture_output=True)
PY
python - "$WORK" <<'PY'
import json, re, sys
import torch
from safetensors.torch import load_file
work = sys.argv[1]
run = f"{work}/results-ddp"
out = open(f"{work}/snakemake-ddp.log").read()
ids = set(re.findall(r"submitted with SLURM jobid (\d+)", out))
jobs = [l for l in open(f"{work}/scontrol-ddp.txt") if re.search(r"JobId=(\d+) ", l)
        and re.search(r"JobId=(\d+) ", l).group(1) in ids]
two = [l for l in jobs if "NumTasks=2 " in l]
assert two, f"no job of the data-parallel run had 2 SLURM tasks ({len(jobs)} jobs)"
log = open(f"{run}/logs/train_member/seed0.log").read()
assert "resuming from" in log, "the 2-task member did not resume"
# srun's 2 ranks, interrupted and resumed twice, compute exactly what torchrun's 2 ranks do
# (tests/test_distributed.py checks 2 ranks against 1 on short runs: over this run's 96 steps
# float32 rounding grows chaotically, as between 1 and 2 threads of one process)
a = load_file(f"{work}/ddp-torchrun/model.safetensors")
b = load_file(f"{run}/members/seed0/model.safetensors")
assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "srun != torchrun"
h1 = json.load(open(f"{work}/ddp-torchrun/model.json"))["history"]
h2 = json.load(open(f"{run}/members/seed0/model.json"))["history"]
keys = ("train_loss", "train_samples", "val_acc", "val_nll")
assert [[r[k] for k in keys] for r in h1] == [[r[k] for k in keys] for r in h2]
print(f"{len(two)} job(s) with 2 SLURM tasks; the 2-task member resumed and its weights and "
      "metrics equal an uninterrupted local 2-process run's")
PY
log "SLURM path OK"
