#!/usr/bin/env bash
# The GPU check: one script that anyone with a GPU machine runs in a few minutes, writing every
# log and a summary to one folder (issue 31):
#
#   bash scripts/gpu_check.sh [OUT]        (default OUT: results/gpu_check)
#
#   1. smoke    the smoke config on the device (on CUDA with bfloat16 AMP, the default there)
#   2. online   config/augment.yaml: augmenting students with the online teacher (the members
#               run on every augmented batch, under the students' autocast)
#   3. ddp      a data-parallel distill job through pipeline.launch on the online run's members:
#               NCCL over all GPUs (at most 2), or, on one GPU, one rank in a process group of
#               one (PROXY_END2_PROCESS_GROUP=1: DDP over NCCL all the same)
#   4. losses   benchmarks/bench_losses.py at B = 256, K = 40,000 on the device
#
# OUT/summary.md and OUT/summary.json say what passed; the exit status is 0 only when all did.
# Without a GPU it runs the same steps on the CPU at toy sizes (the test suite runs that path:
# tests/test_gpu_check.py), so the script cannot rot. GPU_CHECK_DEVICE=cpu forces that path.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/gpu_check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DEVICE=${GPU_CHECK_DEVICE:-$(python -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}
GPUS=0
if [[ $DEVICE == cuda* ]]; then
  GPUS=$(python -c 'import torch; print(torch.cuda.device_count())')
fi
CORES=$(python -c 'import os; print(max(1, min(8, len(os.sched_getaffinity(0)))))')
LIMIT=${GPU_CHECK_STEP_SECONDS:-900}

if [[ $DEVICE == cpu ]]; then  # toy sizes: the path, not the speed
  cat > "$OUT/sizes.yaml" <<'EOF'
dataset: {train_size: 600, val_size: 200, test_size: 300}
ood: {size: 100, corruption_size: 30}
ensemble: {epochs: 1, seeds: [0, 1]}
students: {epochs: 1, seeds: [0]}
gradient_analysis: {ks: [10, 100], batch: 2, profile_k: 100}
EOF
  LOSS_ARGS=(--sizes 8x1000 --repeat 1 --members 3)
  # one student of each run and its evaluation (not the whole DAG): the path, in CI time
  SMOKE_TARGET=("$OUT/smoke/eval/pd_end2-seed0/metrics.csv")
  ONLINE_TARGET=("$OUT/online/eval/pd_end2-seed0/metrics.csv")
else
  SMOKE_TARGET=()
  ONLINE_TARGET=()
  printf '{}\n' > "$OUT/sizes.yaml"
  LOSS_ARGS=(--sizes 256x40000 --repeat 7 --members 10)
fi

python - "$OUT" "$DEVICE" "$GPUS" <<'EOF'
import json, platform, sys
import torch
out, device, gpus = sys.argv[1], sys.argv[2], int(sys.argv[3])
info = {"device": device, "gpus": gpus, "torch": torch.__version__, "host": platform.node(),
        "cuda": torch.version.cuda,
        "gpu_names": [torch.cuda.get_device_name(i) for i in range(gpus)]}
json.dump(info, open(f"{out}/machine.json", "w"), indent=1)
EOF
printf '# GPU check\n\ndevice %s, %s GPU(s), torch %s\n\n| step | result | seconds |\n|---|---|---|\n' \
  "$DEVICE" "$GPUS" "$(python -c 'import torch; print(torch.__version__)')" > "$OUT/summary.md"
: > "$OUT/steps.tsv"

step() {  # step NAME COMMAND...: run it with a time limit, log it, record PASS/FAIL
  local name=$1 start rc
  shift
  start=$(date +%s)
  timeout "$LIMIT" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  local result=PASS
  [[ $rc -ne 0 ]] && result="FAIL (exit $rc, see $name.log)"
  printf '| %s | %s | %s |\n' "$name" "$result" "$(( $(date +%s) - start ))" >> "$OUT/summary.md"
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" >> "$OUT/steps.tsv"
  return 0
}

step smoke snakemake "${SMOKE_TARGET[@]}" --cores "$CORES" --configfile config/smoke.yaml \
  "$OUT/sizes.yaml" --config results="$OUT/smoke" device="$DEVICE"

step online bash -c "
  snakemake ${ONLINE_TARGET[*]:-} --cores $CORES --configfile config/augment.yaml \
    '$OUT/sizes.yaml' --config results='$OUT/online' device=$DEVICE &&
  python - '$OUT/online' <<'PY'
import json, pathlib, sys
run = pathlib.Path(sys.argv[1])
teacher = json.loads((run / 'teacher/manifest.json').read_text())
assert teacher['config']['mode'] == 'online' and 'train' not in teacher['splits'], 'not online'
students = sorted(run.glob('students/*/seed*/model.json'))
assert students and all(json.loads(p.read_text())['config']['teacher_mode'] == 'online'
                        for p in students), 'a student did not use the online teacher'
print(f'online teacher: {len(students)} students, no train split cached')
PY"

RANKS=2
GROUP=0
if [[ $DEVICE == cuda* && $GPUS -lt 2 ]]; then RANKS=1; GROUP=1; fi
if [[ $DEVICE == cpu ]]; then RANKS=1; GROUP=1; fi  # the one-GPU path, with gloo
STUDENT=$(python - "$DEVICE" <<'EOF'
import json, sys
print(json.dumps({"model": {"name": "small_cnn", "width": 16, "pool": 7}, "epochs": 1,
                  "batch_size": 128, "lr": 0.003, "augment": True, "teacher_mode": "online",
                  "method": "pd_end2", "options": {}, "device": sys.argv[1]}))
EOF
)
BACKEND=gloo
[[ $DEVICE == cuda* ]] && BACKEND=nccl
step ddp bash -c "
  set -o pipefail
  members=\$(ls '$OUT'/online/members/seed*/model.safetensors) &&
  PROXY_END2_PROCESS_GROUP=$GROUP python -m pipeline.launch --processes $RANKS -- \
    pipeline.stages.distill --task image --data '$OUT/online/data' \
    --teacher '$OUT/online/teacher' --members \$members --seed 0 --config-json '$STUDENT' \
    --out '$OUT/ddp/model.safetensors' --ckpt '$OUT/ddp.pt' --device $DEVICE --threads 1 \
    2>&1 | tee '$OUT/ddp.stage.log' &&
  grep -q 'process group: backend=$BACKEND world=$RANKS' '$OUT/ddp.stage.log' &&
  test -s '$OUT/ddp/model.safetensors'"

step losses python benchmarks/bench_losses.py --device "$DEVICE" "${LOSS_ARGS[@]}"

python - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
summary = {"machine": json.loads((out / "machine.json").read_text()),
           "steps": {name: {"passed": rc == "0", "exit": int(rc), "seconds": int(s)}
                     for name, rc, s in steps}}
summary["passed"] = all(v["passed"] for v in summary["steps"].values())
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
print((out / "summary.md").read_text())
sys.exit(0 if summary["passed"] else 1)
EOF
