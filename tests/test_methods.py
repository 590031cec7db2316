"""pipeline.methods: the registry is the one home of the methods' options and defaults."""

import subprocess
import sys

import pytest
import torch

from pipeline import methods
from pipeline.maths import losses
from pipeline.maths.stats import teacher_stats
from tests.maths.synthetic import ensemble, student


def test_defaults_are_completed_and_unknown_options_rejected():
    assert methods.resolve_options("pd_end2", {}) == {
        "model_offset": 1.0,
        "target_offset": 1.0,
        "init_bias": None,  # a student option every method takes
    }
    assert methods.resolve_options("end2", {"model_offset": 1.0})["model_offset"] == 1.0
    assert methods.resolve_options("end2", None)["temperature"] is None
    with pytest.raises(ValueError, match=r"method 'pd_end2' has no option\(s\) \['smoothing'\]"):
        methods.resolve_options("pd_end2", {"smoothing": 0.1})
    with pytest.raises(ValueError, match="unknown method 'kd'"):
        methods.get("kd")
    with pytest.raises(ValueError, match="init_bias must be one of"):
        methods.resolve_options("end", {"init_bias": "zeros"})


def test_variants_resolve_to_a_registered_method_and_are_shown_after_it():
    assert methods.variant("pd_end2", {"model_offset": 0.0}) == ("pd_end2", {"model_offset": 0.0})
    opts = {"method": "pd_end2", "model_offset": 0.0, "init_bias": "log_marginal"}
    assert methods.variant("pd_end2_moff0", opts) == (
        "pd_end2",
        {"model_offset": 0.0, "init_bias": "log_marginal"},
    )
    assert opts["method"] == "pd_end2"  # the config is not modified
    with pytest.raises(ValueError, match="group 'kd'.*give `method:`"):
        methods.variant("kd", {})
    with pytest.raises(ValueError, match="has no option"):
        methods.variant("end_x", {"method": "end", "model_offset": 1.0})
    with pytest.raises(ValueError, match="letters, digits and _"):
        methods.variant("end-seed1", {"method": "end"})
    assert methods.label("pd_end2_moff0") == "PD-EnD² moff0"
    assert methods.label("end2_orig") == "EnD² orig"  # the longest registered prefix
    assert methods.label("mine") == "mine"
    groups = ["pd_end2_moff0", "end", "pd_end2", "ensemble", "end2_orig", "end2", "member"]
    assert sorted(groups, key=methods.order) == [
        "member",
        "ensemble",
        "end",
        "end2",
        "end2_orig",
        "pd_end2",
        "pd_end2_moff0",
    ]
    assert methods.color("pd_end2_moff0") in methods.VARIANT_PALETTE
    assert methods.color("pd_end2") == methods.COLORS["pd_end2"]


def test_offsets_and_member_transforms():
    assert methods.model_offset("end2", {}) == 0.0  # the original EnD2 recipe
    assert methods.model_offset("pd_end2", {}) == 1.0  # the paper's PD-EnD2
    assert methods.model_offset("end", {}) == 0.0  # categorical: no Dirichlet at all
    assert not methods.needs_members("end2", {"model_offset": 1.0})
    assert methods.needs_members("end2", {"smoothing": 1e-3})
    assert methods.needs_members("end2", {"temperature": {"initial": 2.0, "hold_epochs": 1}})
    schedule = {"temperature": {"initial": 2.0, "hold_epochs": 1}}
    assert methods.member_transform("end2", schedule, 0) == (2.0, 0.0)
    assert methods.member_transform("end2", schedule, 1) == (1.0, 0.0)
    assert methods.member_transform("pd_end2", {}, 3) == (1.0, 0.0)


def test_end2_temperature_schedule():
    sched = {"initial": 3.0, "hold_epochs": 2, "anneal_epochs": 2}
    assert [methods.temperature_at(e, sched) for e in range(6)] == [3.0, 3.0, 3.0, 2.0, 1.0, 1.0]
    at = [methods.temperature_at(p, sched) for p in (1.99, 2.5, 3.25, 3.999)]
    assert at == pytest.approx([3.0, 2.5, 1.75, 1.001])  # linear, step by step
    assert methods.temperature_at(0.5, {"initial": 2.0, "anneal_epochs": 0}) == 1.0
    assert methods.temperature_at(0, None) == 1.0


@pytest.mark.parametrize(
    ("name", "direct"),
    [
        ("end", lambda z, s: losses.end_loss(z, s)),
        ("end2", lambda z, s: losses.end2_loss(z, s, model_offset=0.0)),
        ("pd_end2", lambda z, s: losses.proxy_rkl_loss(z, s, 1.0, 1.0)),
        ("pd_fkl", lambda z, s: losses.proxy_fkl_loss(z, s, 1.0, 1.0)),
    ],
)
def test_loss_dispatch_uses_the_registered_loss_and_defaults(name, direct):
    stats = teacher_stats(ensemble(4, 3, 20))
    z = student(4, 20)
    assert torch.equal(methods.loss(name, {}, z, stats), direct(z, stats))
    per_example = methods.loss(name, {}, z, stats, reduction="none")
    assert per_example.shape == (4,) and torch.allclose(per_example.mean(), direct(z, stats))


def test_offset_option_reaches_the_loss():
    stats = teacher_stats(ensemble(4, 3, 20))
    z = student(4, 20)
    a = methods.loss("pd_end2", {"model_offset": 0.0}, z, stats)
    assert torch.equal(a, losses.proxy_rkl_loss(z, stats, 0.0, 1.0))
    assert not torch.equal(a, methods.loss("pd_end2", {}, z, stats))


def test_systems_and_display():
    assert methods.parse_system("member-3") == ("member", 3)
    assert methods.parse_system("ensemble") == ("ensemble", None)
    assert methods.parse_system("pd_end2-seed1") == ("pd_end2", 1)
    with pytest.raises(ValueError, match="cannot parse system name"):
        methods.parse_system("student")
    assert methods.parse_system("pd_end2_moff0-seed12") == ("pd_end2_moff0", 12)
    # labels: the registry's display names; a variant reads "<base display> <suffix>"; a
    # group of no registered method keeps its name
    assert [methods.label(g) for g in ("member", "end2", "pd_end2_moff0", "end2_t2_5")] == [
        "Single model",
        "EnD²",
        "PD-EnD² moff0",
        "EnD² t2 5",
    ]
    assert methods.label("kd_custom") == "kd_custom"
    # order: members, ensemble, then each method followed by its variants, unknown groups last
    groups = ["pd_end2_moff0", "kd_custom", "end2", "pd_end2", "ensemble", "end_bias", "member"]
    assert sorted(groups, key=methods.order) == [
        "member",
        "ensemble",
        "end_bias",
        "end2",
        "pd_end2",
        "pd_end2_moff0",
        "kd_custom",
    ]
    # the longest registered prefix names a variant's base: pd_end2_x is PD-EnD2's, not EnD's
    assert methods.label("pd_end2_x").startswith("PD-EnD²")
    # colours: a variant's is stable and from the variant palette, never a registered method's
    assert methods.color("pd_end2_moff0") == methods.color("pd_end2_moff0")
    assert methods.color("pd_end2_moff0") in methods.VARIANT_PALETTE
    assert methods.color("pd_end2") == "tab:green" and methods.color("member") == "tab:gray"


def test_the_workflow_modules_do_not_import_torch():
    code = (
        "import sys; import pipeline.methods, pipeline.tasks, pipeline.imports, "
        "pipeline.config, pipeline.progress, pipeline.status, pipeline.plan, "
        "pipeline.figure_registry, pipeline.defaults; "
        "bad = [m for m in ('torch', 'matplotlib', 'pandas') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
