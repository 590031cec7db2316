"""proxy-end2: Ensemble Distribution Distillation (EnD2) and Proxy-Dirichlet distillation (PD-EnD2).

Layers (``docs/architecture.md``), each importing only from the ones above it:

* :mod:`pipeline.maths`   the maths: teacher statistics, losses, special functions, uncertainty
  measures, metrics (formulas: ``docs/method.md``);
* :mod:`pipeline.methods`, :mod:`pipeline.engine`, :mod:`pipeline.tables`, :mod:`pipeline.io`,
  :mod:`pipeline.config`, :mod:`pipeline.errors`, :mod:`pipeline.progress`, :mod:`pipeline.status`,
  :mod:`pipeline.resources`, :mod:`pipeline.imports`   the registry and the shared machinery;
* :mod:`pipeline.tasks`   one package per task (data, model, batching, predictions);
* :mod:`pipeline.stages`  one module per Snakemake rule, written once against the task interface.
"""

__version__ = "0.1.0"
