"""How confident the members and the ensemble are, several runs side by side (the token task's
language model against the translation task's members: issue 30's question whether the paper's
regime of confident members is reached)::

    python scripts/confidence.py results/text_full results/translation_full [--out table.csv]

Reads each run's ``V*/eval/{member-*,ensemble}/metrics.csv`` (the members' and the ensemble's
evaluations are enough: a run need not have its students) and prints one markdown table, a
block of rows per run (:func:`pipeline.tables.confidence_side_by_side`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run_metrics(run: Path):
    """The members' and the ensemble's tidy metrics of one run folder."""
    import pandas as pd

    from pipeline.tables import read_tidy

    files = sorted(run.glob("V*/eval/member-*/metrics.csv")) + sorted(
        run.glob("V*/eval/ensemble/metrics.csv")
    )
    if not files:
        raise SystemExit(f"{run}: no V*/eval/member-*/metrics.csv or ensemble/metrics.csv")
    return pd.concat([read_tidy(f) for f in files], ignore_index=True)


def labels(runs: list[Path]) -> list[tuple[str, Path]]:
    """Each run labelled by its folder's name, or by the path as given where two names agree
    (``a/results``, ``b/results``); the same folder twice is refused."""
    if len({r.resolve() for r in runs}) < len(runs):
        raise SystemExit(f"a run is given twice: {' '.join(map(str, runs))}")
    names = [r.name for r in runs]
    unique = len(set(names)) == len(names)
    return [(r.name if unique else str(r), r) for r in runs]


def main(argv: list[str] | None = None) -> str:
    from pipeline.tables import confidence_side_by_side

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="results folders (results/text_full ...)")
    ap.add_argument("--out", type=Path, help="also write the table as CSV here")
    a = ap.parse_args(argv)
    try:
        table = confidence_side_by_side({k: run_metrics(r) for k, r in labels(a.runs)}).frame
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if a.out:
        table.to_csv(a.out, index=False)
    text = table.to_markdown(index=False)
    print(text)
    return text


if __name__ == "__main__":
    main()
