"""Stage ``lr_search`` (``rule lr_choice``, ``rule lr_table``): each method group's learning rate,
chosen on validation from a small grid, so every method is trained at its own best rate rather
than at one shared value.

``rule lr_trial`` trains one student per (group, rate) with the ``distill`` stage at one V and
seed (``lr_search.vocab``, ``lr_search.seed``) on the students' budget with ``lr_search.overrides``
applied; this stage then reads the trials' histories:

* ``choose`` (``rule lr_choice``): the rate whose student ends with the highest validation
  ``val_agreement`` (top-1 agreement with the ensemble); a tie goes to the lower ``val_nll``,
  then to the smaller rate. A trial that diverged (no finite agreement) is never chosen. A rate
  at either end of the grid is flagged (``edge``): the best rate may lie beyond it. Writes
  ``choice.json``; ``rule distill`` reads its ``lr`` (:func:`pipeline.stages.distill.read_choice`;
  kept there so that editing this stage does not change the students' code).
* ``table`` (``rule lr_table``): every group's grid and choice as ``lr_search.csv`` / ``.md``.

Run by hand::

    python -m pipeline.stages.lr_search choose --group end --lrs 0.002 0.005 \
        --histories results/text/lr_search/end/lr0.002/history.csv ... --out choice.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.io import ArtifactError, atomic_write_text, read_json, reported
from pipeline.methods import label, order

if TYPE_CHECKING:
    import pandas as pd

RULE = "lr_choice"
METRIC = "val_agreement"


def choose(group: str, trials: dict[float, Path]) -> dict:
    """The choice of ``group`` from ``{lr: history.csv}``: ``{"group", "metric", "lr",
    "trials": [{"lr", "val_agreement", "val_nll"}, ...]}`` (trials in increasing rate)."""
    import pandas as pd

    rows = []
    for lr, path in sorted(trials.items()):
        h = pd.read_csv(path)
        if METRIC not in h:
            raise ArtifactError(path, f"has no {METRIC} column (not a student history)", "lr_trial")
        last = h.iloc[-1]
        nll = float(last["val_nll"]) if "val_nll" in h else math.nan
        rows.append({"lr": float(lr), METRIC: float(last[METRIC]), "val_nll": nll})
    usable = [r for r in rows if math.isfinite(r[METRIC])]
    if not usable:
        raise ValueError(f"lr search of {group!r}: no trial has a finite {METRIC}")
    best = max(
        usable,
        key=lambda r: (
            r[METRIC],
            -r["val_nll"] if math.isfinite(r["val_nll"]) else -math.inf,
            -r["lr"],
        ),
    )
    lrs = [r["lr"] for r in rows]
    edge = "upper" if best["lr"] == max(lrs) else "lower" if best["lr"] == min(lrs) else None
    return {"group": group, "metric": METRIC, "lr": best["lr"], "edge": edge, "trials": rows}


def _mark(info: dict) -> str:
    edge = info.get("edge")
    return f"✓ ({edge} edge of the grid)" if edge else "✓"


def table(choices: list[Path]) -> pd.DataFrame:
    """One row per (group, rate): the trial's final validation agreement and NLL, and whether it
    was chosen; groups in display order."""
    import pandas as pd

    rows = []
    infos = [read_json(Path(p), RULE) for p in choices]
    for info in sorted(infos, key=lambda i: order(i["group"])):
        for t in info["trials"]:
            rows.append(
                {
                    "method": label(info["group"]),
                    "lr": t["lr"],
                    "val agreement": round(t[METRIC], 4),
                    "val NLL": round(t["val_nll"], 4),
                    "chosen": _mark(info) if t["lr"] == info["lr"] else "",
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description="Learning-rate search (rules lr_choice, lr_table)")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("choose", help="one group's rate from its trials' histories")
    c.add_argument("--group", required=True)
    c.add_argument("--lrs", nargs="+", type=float, required=True)
    c.add_argument("--histories", nargs="+", type=Path, required=True)
    c.add_argument("--out", required=True, type=Path)
    t = sub.add_parser("table", help="every group's grid and choice")
    t.add_argument("--choices", nargs="+", type=Path, required=True)
    t.add_argument("--out", required=True, type=Path, help="the table's .csv (a .md beside it)")
    args = ap.parse_args()
    if args.command == "choose":
        if len(args.lrs) != len(args.histories):
            raise ValueError(f"{len(args.lrs)} rates for {len(args.histories)} histories")
        info = choose(args.group, dict(zip(args.lrs, args.histories, strict=True)))
        atomic_write_text(json.dumps(info, indent=2), args.out)
        print(json.dumps(info, indent=2))
        if info["edge"]:
            print(
                f"warning: {args.group}: the best rate {info['lr']} is at the {info['edge']} "
                "edge of lr_search.lrs; the best may lie beyond it (extend the grid)"
            )
    else:
        frame = table(args.choices)
        atomic_write_text(frame.to_csv(index=False), args.out)
        atomic_write_text(frame.to_markdown(index=False), args.out.with_suffix(".md"))
        print(frame.to_markdown(index=False))


if __name__ == "__main__":
    with reported():
        main()
