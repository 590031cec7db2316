"""Stage ``translate_train`` (rules ``translate_shard`` and ``ensemble_translations``): the
ensemble's own outputs for the train inputs, which the students learn on instead of the
references where ``students.targets: ensemble`` (a task with ``TaskSpec.ensemble_targets``; the
translation task: :mod:`pipeline.tasks.translation.distill_data`, its beam-search translations).

Each shard job translates its slice of the train rows the students read; the merge writes the
folder the students read (``train.safetensors``, ``manifest.json``). Run by hand::

    python -m pipeline.stages.translate_train --task translation --data results/translation/data \
        --num-classes 1000 --members m0.safetensors m1.safetensors --train-pairs 6000 \
        --shard 0 --shards 1 --out .../V1000/ensemble_translations/shard0.safetensors
    python -m pipeline.stages.translate_train --task translation --data results/translation/data \
        --num-classes 1000 --members m0.safetensors m1.safetensors --train-pairs 6000 \
        --merge .../shard0.safetensors --out results/translation/V1000/ensemble_translations
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline import tasks
from pipeline.device import select_device, set_threads
from pipeline.errors import ConfigError
from pipeline.io import reported
from pipeline.progress import add_arguments as add_progress_arguments
from pipeline.progress import job
from pipeline.resources import ResourceRecord


def _pairs(value: str) -> int | None:
    return None if value == "all" else int(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, choices=sorted(tasks.TASKS))
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--num-classes", required=True, type=int)
    ap.add_argument("--members", required=True, nargs="+", type=Path)
    ap.add_argument(
        "--train-pairs", required=True, nargs="+", type=_pairs,
        help="each reader's train_pairs ('all' for every pair): the rows decoded cover them",
    )  # fmt: skip
    ap.add_argument("--shard", type=int, default=None, help="this job's slice of the rows")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--merge", nargs="+", type=Path, default=None, help="the shards to merge")
    ap.add_argument("--config-json", default="{}", help="decoding: beam, alpha, batch")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--resources-json", type=Path, default=None, help="resource record to write")
    add_progress_arguments(ap)
    args = ap.parse_args()
    if not tasks.spec(args.task).ensemble_targets:
        raise ConfigError("students.targets", "ensemble", f"reference (task {args.task})")
    if (args.merge is None) == (args.shard is None):
        ap.error("give --shard (translate a slice) or --merge (join the shards), not both")
    set_threads(args.threads)
    impl = tasks.load(args.task)
    cfg = json.loads(args.config_json)
    rows = impl.translated_rows(args.data, args.num_classes, args.train_pairs)
    if args.merge is not None:
        info = impl.merge_translations(
            args.merge, rows, args.data, args.members, args.num_classes, cfg, args.out
        )
        print(f"{info['rows']} translations, {info['target_tokens']} target tokens -> {args.out}")
        return
    if not 0 <= args.shard < args.shards:
        ap.error(f"--shard {args.shard} is not one of the {args.shards} shards")
    device = select_device(args.device)
    name = f"translate_shard V={args.num_classes} shard={args.shard}/{args.shards}"
    with (
        job(name, args.progress),
        ResourceRecord(args.resources_json, "translate_shard", device) as rec,
    ):
        mine = rows[args.shard :: args.shards]
        rec.samples = len(mine)
        impl.translate_shard(args.data, args.members, args.num_classes, mine, cfg, device, args.out)


if __name__ == "__main__":
    with reported():
        main()
