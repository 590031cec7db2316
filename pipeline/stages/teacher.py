"""Stage ``teacher`` (``rule cache_teacher``): every member run once over the splits the task's
teacher artifact needs (the image task: sufficient statistics of every split; the token task:
per-token outputs of the evaluation splits), with a manifest naming the members' checksums.

Run by hand (what the rule does)::

    python -m pipeline.stages.teacher --task image --data results/default/data \
        --members m0.safetensors m1.safetensors --seeds 0 1 --out results/default/teacher \
        --config-json '{"dtype": "float16"}'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline import distributed as D
from pipeline import tasks
from pipeline.device import select_device, set_threads
from pipeline.io import reported
from pipeline.progress import add_arguments as add_progress_arguments
from pipeline.progress import job
from pipeline.resources import ResourceRecord


def main() -> None:
    ap = argparse.ArgumentParser(description="Build the teacher artifact (rule cache_teacher)")
    ap.add_argument("--task", required=True, choices=sorted(tasks.TASKS))
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--num-classes", type=int, default=None, help="K, where the task sweeps it")
    ap.add_argument("--members", required=True, nargs="+", type=Path)
    ap.add_argument("--seeds", required=True, nargs="+", type=int)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--config-json", default="{}")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--resources-json", type=Path, default=None, help="resource record to write")
    add_progress_arguments(ap)
    args = ap.parse_args()
    set_threads(args.threads)
    cfg = {**json.loads(args.config_json), "device": args.device}
    impl = tasks.load(args.task)
    device = D.init(select_device(args.device))  # joins the job's ranks, if it has several
    main = D.world().main
    if not (main or tasks.spec(args.task).shared_prediction):
        D.close()  # this task's artifact is built by rank 0 alone
        return
    name = "cache_teacher" + (f" V={args.num_classes}" if args.num_classes else "")
    with (
        reported(),
        job(name, args.progress if main else None),
        ResourceRecord(args.resources_json if main else None, "cache_teacher", device) as rec,
    ):
        _, rec.samples = impl.build_teacher(
            args.data,
            args.members,
            args.seeds,
            args.out,
            cfg,
            args.num_classes,
            log=D.main_only(lambda s: print(s, flush=True)),
        )
    D.close()


if __name__ == "__main__":
    main()
