"""How large a proxy loss's gradient gets when the student's mean is slightly off (issue 31):
``max_c |dL/dz_c|`` of PD-EnD2 (reverse KL / beta_0) and PD-FKL (forward KL, not normalised)
for a student at the target's precision alpha_0 = beta_hat_0 whose mean is off by ``--mismatch``
(:func:`pipeline.maths.gradients.mismatch_gradient`), against the precision.

    python benchmarks/bench_pd_fkl_gradient.py [--k 10] [--mismatch 1e-3]
"""

from __future__ import annotations

import argparse

from pipeline.maths.gradients import mismatch_gradient

PRECISIONS = (1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=10, help="classes")
    ap.add_argument("--mismatch", type=float, default=1e-3, help="student mean error")
    a = ap.parse_args()
    print(f"K = {a.k}, student mean off by {a.mismatch:g}, alpha_0 = beta_hat_0")
    print(f"{'beta_hat_0':>10s} {'PD-FKL max|dL/dz|':>18s} {'PD-EnD2 max|dL/dz|':>19s}")
    for precision in PRECISIONS:
        try:
            fkl = f"{mismatch_gradient('pd_fkl', precision, a.k, a.mismatch):18.3g}"
            rkl = f"{mismatch_gradient('pd_end2', precision, a.k, a.mismatch):19.3g}"
        except ValueError as err:  # a mismatch larger than a class's share at low precision
            fkl, rkl = f"{'—':>18s}", f"({err})"
        print(f"{precision:10.0e} {fkl} {rkl}")


if __name__ == "__main__":
    main()
