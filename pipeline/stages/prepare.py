"""Stage ``prepare`` (``rule prepare_data``): the task's raw data -> prepared splits and a manifest
(sizes, checksums, the config slice and code version), so later stages never re-parse raw files.

Run by hand (what the rule does)::

    python -m pipeline.stages.prepare --task image \
        --config-json '{"dataset": {...}, "ood": {...}}' --out results/default/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline import tasks
from pipeline.io import reported


def main() -> None:
    ap = argparse.ArgumentParser(description="Prepare the dataset splits (rule prepare_data)")
    ap.add_argument("--task", required=True, choices=sorted(tasks.TASKS))
    ap.add_argument("--config-json", required=True, help="the dataset and ood config slices")
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    args = ap.parse_args()
    impl = tasks.load(args.task)
    with reported():
        print(impl.describe(impl.prepare(json.loads(args.config_json), args.out)))


if __name__ == "__main__":
    main()
