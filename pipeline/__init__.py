"""proxy-end2: Ensemble Distribution Distillation (EnD2) and Proxy-Dirichlet distillation (PD-EnD2).

The maths lives in :mod:`pipeline.dirichlet` (student Dirichlet, teacher statistics, losses),
:mod:`pipeline.uncertainty` (uncertainty measures) and :mod:`pipeline.metrics` (evaluation
metrics). See ``../shared/method.md`` for every formula.
"""

__version__ = "0.1.0"
