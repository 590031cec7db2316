"""The README's code runs exactly as printed."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(heading: str) -> str:
    """The first ```python block under ``heading`` (a ## heading of the README)."""
    text = README.read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, f"no python block under '## {heading}'"
    return match.group(1)


def test_the_loss_example_runs_and_trains():
    code = _block("Use the losses in your own training loop")
    out = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    losses = [float(v) for v in re.findall(r"step \d+: loss ([0-9.]+)", out.getvalue())]
    assert len(losses) == 2, out.getvalue()
    assert losses[1] < 0.5 * losses[0], losses  # the student learns the ensemble
    mi = float(re.search(r"\(MI\) of the last batch: ([0-9.]+)", out.getvalue()).group(1))
    assert mi > 0  # a Dirichlet student keeps knowledge uncertainty (an EnD student has none)
    assert set(namespace["u"]) >= {"total", "data", "knowledge", "epkl", "rmi"}
