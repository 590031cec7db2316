"""pipeline.maths' public surface: every name resolves, is documented with shapes, and loads
lazily (importing one submodule does not import the losses' kernels)."""

import inspect
import re
import subprocess
import sys

import pytest

import pipeline.maths as M


@pytest.mark.parametrize("name", M.__all__)
def test_every_public_name_resolves_with_a_shape_in_its_docstring(name):
    obj = getattr(M, name)
    assert obj.__module__.startswith("pipeline.maths."), (name, obj.__module__)
    doc = inspect.getdoc(obj) or ""
    assert re.search(r"\[[BMK](, [BMK])*\]", doc), f"{name}: no [B, ...] shape in its docstring"
    assert name in dir(M)


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        M.nope  # noqa: B018


def test_the_losses_take_their_options_explicitly():
    """No option defaults of their own: the method registry holds them."""
    for name in ("end2_loss", "proxy_rkl_loss", "proxy_fkl_loss"):
        params = inspect.signature(getattr(M, name)).parameters
        for option in ("model_offset", "target_offset"):
            if option in params:
                assert params[option].default is inspect.Parameter.empty, (name, option)


def test_a_submodule_alone_does_not_load_the_losses():
    code = "import pipeline.maths.metrics, sys; print('pipeline.maths.losses' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
