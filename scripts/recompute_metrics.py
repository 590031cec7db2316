"""Recompute every metric of an image run from its stored per-example arrays, with numpy and
scikit-learn alone (the independent implementation of ``tests/tasks/image/test_evaluation.py``),
and check it against each system's ``metrics.csv``::

    python scripts/recompute_metrics.py results/default [--config config/config.yaml]

Prints one line per system and exits non-zero at the first value that differs (by more than
1e-9, the independent code's float64 rounding)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    import pandas as pd
    import yaml
    from safetensors.numpy import load_file

    from tests.tasks.image.test_evaluation import _shift_info, check_recomputed

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="the run's results folder (with data/ and eval/)")
    ap.add_argument("--config", type=Path, default=REPO / "config/config.yaml")
    a = ap.parse_args()
    bins = int((yaml.safe_load(a.config.read_text()).get("evaluation") or {}).get("ece_bins", 10))
    info = _shift_info(a.run / "data")
    total = 0
    for d in sorted((a.run / "eval").iterdir()):
        metrics = pd.read_csv(d / "metrics.csv", keep_default_na=False, na_values=["nan", "NaN"])
        n = check_recomputed(metrics, load_file(str(d / "per_example.safetensors")), info, bins)
        print(f"{d.name:16s} {n} metrics recomputed equal")
        total += n
    print(f"all {total} metrics of {a.run} recompute from the stored arrays")


if __name__ == "__main__":
    main()
