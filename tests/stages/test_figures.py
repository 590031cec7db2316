"""Stage figures and the figure registry: every figure of each task, drawn from the files it is
given and no others, with the values of those files on its axes."""

import inspect
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from pipeline import methods, plotting, tasks
from pipeline.figure_registry import INPUTS, OPTIONS, Figure
from pipeline.maths import metrics as Mx
from pipeline.stages import figures as F
from pipeline.stages.aggregate import aggregate
from pipeline.stages.gradient_analysis import rank_profile, run
from pipeline.tables import read_tidy
from pipeline.tasks.image import figures as IF
from pipeline.tasks.text import figures as TF
from tests.tasks.text.test_summary import fake_tidy


@pytest.fixture(scope="module")
def gradient(tmp_path_factory):
    d = tmp_path_factory.mktemp("grad")
    run(ks=(10, 100), batch=2).to_csv(d / "head_share.csv", index=False)
    rank_profile(100).to_csv(d / "rank_profile.csv", index=False)
    return d


@pytest.fixture
def drawn(monkeypatch):
    """Every figure drawn (name -> matplotlib figure), still saved as PNG and PDF."""
    figs = {}
    real = plotting.save

    def keep(fig, out, name):
        figs[name] = fig
        return real(fig, out, name)

    for module in (plotting, IF, TF):
        monkeypatch.setattr(module, "save", keep)
    return figs


def _lines(ax) -> dict:
    """label -> (x, y) of the labelled lines of ``ax``."""
    return {
        ln.get_label(): (np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float))
        for ln in ax.get_lines()
        if not ln.get_label().startswith("_")
    }


@pytest.mark.parametrize("task", sorted(tasks.TASKS))
def test_every_registered_figure_is_a_function_taking_its_inputs_and_options(task):
    """The registry drives the stage: each entry names a function of the task's figures module
    whose keyword parameters are ``out``, its inputs and its options (nothing else without a
    default), and has a caption."""
    spec = tasks.spec(task)
    module = tasks.load(task).figure_module()
    for figure in spec.figures:
        params = inspect.signature(getattr(module, figure.function)).parameters
        required = {n for n, p in params.items() if p.default is inspect.Parameter.empty}
        assert required <= {"out", *figure.inputs, *figure.options}, figure
        assert {"out", *figure.inputs, *figure.options} <= set(params), figure
        assert (F.Path(__file__).parents[2] / "workflow/report" / f"{figure.name}.rst").is_file()
    with pytest.raises(ValueError, match="unknown inputs or options"):
        Figure("x", "x", ("tiddy",))


def test_the_command_line_has_a_flag_per_input_and_option(tmp_path):
    args = F.parser().parse_args(
        ["--task", "image", "--out", str(tmp_path), "--per-example", "a", "b", "--ece-bins", "7"]
    )
    assert args.per_example == [F.Path("a"), F.Path("b")] and args.ece_bins == 7
    assert args.tidy is None and args.curves == [] and args.measure is None
    assert set(INPUTS) | set(OPTIONS) <= set(vars(args))


def test_image_figures_show_the_values_of_the_files_given(
    evaluated, prepared, gradient, tmp_path, drawn
):
    d, _ = evaluated
    files = sorted(d.glob("*/per_example.safetensors"))
    tables = tmp_path / "tables"
    aggregate("image", sorted(d.glob("*/metrics.csv")), tables)
    given = {
        "per_example": files,
        "tidy": tables / "metrics_tidy.csv",
        "histories": [d / "student" / "history.csv"],
        "shares": gradient / "head_share.csv",
        "profile": gradient / "rank_profile.csv",
        "data_manifest": prepared / "manifest.json",
        "ece_bins": 5,
    }
    paths = F.draw("image", tmp_path / "fig", given)
    names = tasks.spec("image").figure_names
    assert [p.name for p in paths] == [f"{n}.{e}" for n in names for e in ("png", "pdf")]
    assert list(drawn) == list(names)
    arrays = {g: load_file(str(p)) for g, p in plotting.representatives(files).items()}
    assert list(arrays) == ["member", "ensemble", "pd_end2"]  # member-0 is the member shown

    # rejection curves: one panel per measure; each system's curve starts at 1 and its
    # legend carries its PRR, recomputed here from the arrays
    axes = drawn["rejection_curves"].axes
    assert [ax.get_title() for ax in axes] == [
        "rejection by total (TU)",
        "rejection by knowledge (MI)",
        "rejection by −confidence",
    ]
    for ax, measure in zip(axes, ["total", "knowledge", "neg_confidence"], strict=True):
        lines = _lines(ax)
        for group, a in arrays.items():
            errors = a["test.pred"] != a["test.label"]
            prr = Mx.prr(a[f"test.{measure}"], errors)
            (label,) = [k for k in lines if k.startswith(f"{methods.label(group)} (PRR")]
            assert label.startswith(f"{methods.label(group)} (PRR {prr:.2f})")
            assert lines[label][1][0] == pytest.approx(1.0)
        assert "random" in lines

    # reliability: one panel per group titled with its ECE over the configured 5 bins
    rel = drawn["reliability"].axes
    for ax, (group, a) in zip(rel, arrays.items(), strict=True):
        ece = Mx.ece(a["test.probs"], a["test.label"], 5)
        assert ax.get_title() == f"{methods.label(group)}\nECE {ece:.3f}"
        assert len(ax.patches) == 5  # the bins asked for

    # shift: per group, the mean accuracy of each severity from the tidy table
    tidy = read_tidy(tables / "metrics_tidy.csv")
    t = tidy[(tidy["split"] == "shift") & (tidy["corruption"] == "all")]
    shift_axes = drawn["shift"].axes[0]
    acc_lines = {c.get_label().removesuffix(" (failed)"): c.lines[0] for c in shift_axes.containers}
    for group in ("member", "ensemble", "pd_end2"):
        want = t[(t["group"] == group) & (t["metric"] == "accuracy")]
        want = want.groupby("severity")["value"].mean().to_numpy()
        got = np.asarray(acc_lines[methods.label(group)].get_ydata(), float)
        np.testing.assert_allclose(got, np.asarray(want, float))

    # knowledge scatter: the Dirichlet student's MI against the ensemble's, point for point
    (ax,) = drawn["knowledge_scatter"].axes
    test = ax.collections[0].get_offsets()
    np.testing.assert_allclose(test[:, 0], arrays["ensemble"]["test.knowledge"], rtol=1e-6)
    np.testing.assert_allclose(test[:, 1], arrays["pd_end2"]["test.knowledge"], rtol=1e-6)

    # OOD histograms: each panel's AUROC is the one recomputed from the arrays
    hist = drawn["ood_histograms"].axes
    ens = arrays["ensemble"]
    text = " ".join(t.get_text() for t in hist[0].texts)
    for o in sorted(k.split(".")[0] for k in ens if k.startswith("ood_") and k.endswith(".total")):
        auc = Mx.ood_auroc(ens["test.total"], ens[f"{o}.total"])
        assert f"{o.removeprefix('ood_')} {auc:.2f}" in text

    # the gradient analysis: the head-share means of the table, per method
    shares = pd.read_csv(gradient / "head_share.csv")
    lines = {c.get_label(): c for c in drawn["gradient_analysis"].axes[0].containers}
    for method, g in shares.groupby("method"):
        y = np.asarray(lines[methods.label(method)].lines[0].get_ydata(), float)
        want = g.groupby("num_classes")["head_share"].mean().to_numpy()
        np.testing.assert_allclose(y, want)
    for fig in drawn.values():
        plt.close(fig)


def test_only_what_is_given_is_drawn(evaluated):
    d, _ = evaluated
    files = sorted(d.glob("*/per_example.safetensors"))
    reps = plotting.representatives(files[:2])
    assert set(reps) == {methods.parse_system(f.parent.name)[0] for f in files[:2]}


def test_failed_systems_are_marked_relative_to_the_ensemble():
    base = {"ensemble": 0.08, "end": 0.09, "pd_fkl": 0.63, "member": 0.1}
    assert plotting.failed(base) == {"pd_fkl"}
    assert plotting.failed({"end": 0.1, "end2": 0.12}) == set()  # no ensemble: the median


def fake_curves(tmp_path):
    """Learning curves of two groups x two seeds at V = 100 and 1000 (as rule distill lays
    them out)."""
    files = []
    for v in (100, 1000):
        for group in ("end", "pd_end2_moff0"):
            for seed in (0, 1):
                d = tmp_path / f"V{v}" / "students" / group / f"seed{seed}"
                d.mkdir(parents=True)
                steps = [0, 20, 40, 50]
                pd.DataFrame(
                    {
                        "step": steps,
                        "epoch": [0, 1, 1, 1],
                        "samples": [s * 16 for s in steps],
                        "val_agreement": [0.1, 0.5 + 0.01 * seed, 0.7, 0.75],
                        "val_nll_gap": [4.0, 1.0, 0.5, 0.4],
                        "val_kl": [4.0, 1.0, 0.5, 0.4],
                        "member_agreement": [0.8] * 4,
                    }
                ).to_csv(d / "curve.csv", index=False)
                files.append(d / "curve.csv")
    return files


def fake_token_gradients(tmp_path):
    """The two tables of the token_gradients stage for two groups at V = 50."""
    rank = list(range(1, 51))
    profile = pd.DataFrame(
        {"rank": rank, "mean_prob": [1 / r for r in rank], "end": [1 / r for r in rank],
         "pd_end2_moff0": [1 / r**2 for r in rank]}
    )  # fmt: skip
    gate = pd.DataFrame(
        {"group": ["end", "pd_end2_moff0"], "top_class_below_zero": [0.0, 0.25],
         "mean_top_logit": [6.0, 3.5]}
    )  # fmt: skip
    profile.to_csv(tmp_path / "token_profile.csv", index=False)
    gate.to_csv(tmp_path / "token_gate.csv", index=False)
    return tmp_path / "token_profile.csv", tmp_path / "token_gate.csv"


def test_text_figures_show_the_values_of_the_files_given(tmp_path, gradient, drawn):
    aggregate("text", fake_tidy(tmp_path), tmp_path / "tables")
    profile, gate = fake_token_gradients(tmp_path)
    given = {
        "sweep": tmp_path / "tables" / "sweep.csv",
        "shares": gradient / "head_share.csv",
        "curves": fake_curves(tmp_path / "runs"),
        "token_profile": profile,
        "token_gate": gate,
        "ood_set": "permuted",
        "measure": "knowledge",
    }
    paths = F.draw("text", tmp_path / "fig", given)
    assert [p.name for p in paths] == [
        "class_sweep.png",
        "class_sweep.pdf",
        "learning_curves.png",
        "learning_curves.pdf",
        "token_gradients.png",
        "token_gradients.pdf",
    ]
    # class sweep: each group's agreement against V in the headline panel is the sweep table's
    # mean, a single member's mean the dashed line of its band
    sweep = pd.read_csv(given["sweep"], keep_default_na=False)
    test = sweep[sweep["split"] == "test"]
    agree = test[test["metric"] == "agreement"]
    fig = drawn["class_sweep"]
    headline = {c.get_label(): c for c in fig.axes[0].containers}
    assert set(headline) == {"EnD²", "PD-EnD²"}
    for group in ("end2", "pd_end2"):
        rows = agree[agree["group"] == group].sort_values("vocab")
        line = headline[methods.label(group)].lines[0]
        np.testing.assert_array_equal(line.get_xdata(), rows["vocab"].to_numpy())
        np.testing.assert_allclose(line.get_ydata(), pd.to_numeric(rows["mean"]).to_numpy())
    member = agree[agree["group"] == "member"].sort_values("vocab")
    dashed = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--"]
    np.testing.assert_allclose(dashed[0].get_ydata(), pd.to_numeric(member["mean"]).to_numpy())
    # the NLL gap: EnD2's 1.15 nats at V = 1,000 is an outlier, drawn at the top edge with its
    # value written beside it; the others set the axis
    gap = fig.axes[1]
    end2 = {c.get_label(): c for c in gap.containers}["EnD²"].lines[0]
    assert end2.get_ydata()[1] == pytest.approx(gap.get_ylim()[1]) and gap.get_ylim()[1] < 0.5
    note = next(t for t in gap.texts if t.get_text() == "1.15")
    fig.canvas.draw()  # at the last V it is written left of its mark, inside the panel
    box, frame = note.get_window_extent(), gap.get_window_extent()
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"EnD²", "PD-EnD²", "single member ± std", "ensemble"} <= set(legend)
    TF.class_sweep(tmp_path / "fig4", given["sweep"], None, "permuted", "knowledge", "pd_end2")
    only = {c.get_label() for c in drawn["class_sweep"].axes[0].containers}
    assert only == {"PD-EnD²"}  # the headline option picks the groups of the first panel
    with pytest.raises(ValueError, match="not student groups"):
        TF.class_sweep(tmp_path / "fig5", given["sweep"], None, "permuted", "knowledge", "nope")
    # learning curves: the mean over seeds of each group's agreement at every step, per V
    top = drawn["learning_curves"].axes[0]
    assert top.get_title() == "V = 100"
    end = _lines(top)["EnD"]
    np.testing.assert_array_equal(end[0], [0, 20, 40, 50])
    np.testing.assert_allclose(end[1], [0.1, 0.505, 0.7, 0.75])
    assert _lines(top)["single member"][1][0] == pytest.approx(0.8)
    # token gradients: each group's profile normalised by its total; the gate's shares as bars
    left, right = drawn["token_gradients"].axes
    p = pd.read_csv(profile)
    np.testing.assert_allclose(_lines(left)["PD-EnD² moff0"][1], p["pd_end2_moff0"] / p[
        "pd_end2_moff0"].sum())  # fmt: skip
    assert [bar.get_width() for bar in right.patches] == [0.0, 0.25]
    curves = TF.read_curves(given["curves"])
    assert sorted(curves["vocab"].unique()) == [100, 1000]
    assert set(curves["group"]) == {"end", "pd_end2_moff0"} and len(curves) == 32
    with pytest.raises(ValueError, match="no curve.csv given"):
        TF.learning_curves(tmp_path / "fig3", [])
    with pytest.raises(ValueError, match="the OOD set 'kjv' is not in the sweep"):
        F.draw("text", tmp_path / "fig2", {**given, "ood_set": "kjv"})
    for fig in drawn.values():
        plt.close(fig)


def test_the_gradient_diagnostic_at_several_vocabularies_draws_each_v_and_the_shares_against_v(
    tmp_path, drawn
):
    """One profile panel per V (given in any order, drawn by V), then each group's head share
    and below-zero share against V, read from the gate tables; the legend outside the panels."""
    files = {}
    for vocab, head in ((400, 0.9), (50, 0.6)):
        rank = np.arange(1, vocab + 1)
        d = tmp_path / f"V{vocab}"
        d.mkdir()
        pd.DataFrame({"rank": rank, "mean_prob": 1 / rank, "end": 1 / rank,
                      "pd_end2_moff0": 1 / rank**2}).to_csv(d / "p.csv", index=False)  # fmt: skip
        pd.DataFrame(
            {"group": ["end", "pd_end2_moff0"], "top_class_below_zero": [0.0, head / 3],
             "head_share": [head, head / 2], "mean_top_logit": [6.0, 3.5]}
        ).to_csv(d / "g.csv", index=False)  # fmt: skip
        files[vocab] = (d / "p.csv", d / "g.csv")
    given = [files[400], files[50]]
    plotting.token_gradients(tmp_path / "fig", [p for p, _ in given], [g for _, g in given])
    fig = drawn["token_gradients"]
    first, second, head, below = fig.axes
    assert [first.get_title(), second.get_title()] == [
        "gradient by rank, V = 50 (val tokens)",
        "gradient by rank, V = 400 (val tokens)",
    ]
    assert len(_lines(second)["EnD"][0]) == 400
    np.testing.assert_array_equal(_lines(head)["EnD"][0], [50, 400])
    np.testing.assert_allclose(_lines(head)["EnD"][1], [0.6, 0.9])
    np.testing.assert_allclose(_lines(head)["PD-EnD² moff0"][1], [0.3, 0.45])
    np.testing.assert_allclose(_lines(below)["PD-EnD² moff0"][1], [0.2, 0.3])
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"EnD", "PD-EnD² moff0"}
    with pytest.raises(ValueError, match="2 profiles for 1 gate tables"):
        plotting.token_gradients(tmp_path / "fig2", [given[0][0], given[1][0]], [given[0][1]])
    plt.close(fig)


def test_learning_curves_legend_names_every_group_and_variants_get_distinct_colours(
    tmp_path, drawn
):
    """A group that runs at the second V only is still in the legend, which sits outside the
    panels (one figure legend, no panel legend over the curves) in the registry's order with
    the member's bar last, and two variants whose name-hash colours collide (pd_end2_moff0,
    pd_end2_bias) are drawn in different colours."""
    files = fake_curves(tmp_path / "runs")
    for group in ("pd_end2_bias", "end_bias"):  # at V = 1000 only
        d = tmp_path / "runs" / "V1000" / "students" / group / "seed0"
        d.mkdir(parents=True)
        shutil.copyfile(files[0], d / "curve.csv")
        files.append(d / "curve.csv")
    plotting.set_palette(["end", "pd_end2_moff0", "pd_end2_bias", "end_bias"])
    TF.learning_curves(tmp_path / "fig", files)
    fig = drawn["learning_curves"]
    assert all(ax.get_legend() is None for ax in fig.axes)
    (figlegend,) = fig.legends
    legend = [t.get_text() for t in figlegend.get_texts()]
    assert {"EnD", "PD-EnD² moff0", "PD-EnD² bias", "EnD bias", "single member"} == set(legend)
    assert legend[-1] == "single member" and legend.index("EnD") < legend.index("EnD bias")
    right = max(ax.get_position().x1 for ax in fig.axes)
    fig.canvas.draw()
    box = figlegend.get_window_extent().transformed(fig.transFigure.inverted())
    assert box.x0 >= right
    colours = {line.get_label(): line.get_color() for ax in fig.axes for line in ax.get_lines()}
    assert colours["PD-EnD² moff0"] != colours["PD-EnD² bias"]
    plt.close(fig)


def test_palette_gives_a_runs_variants_distinct_colours():
    """The name hash of methods.color can collide; the run's palette cannot (up to 7 variants)."""
    assert methods.color("pd_end2_moff0") == methods.color("pd_end2_bias")
    pal = plotting.palette(["pd_end2_bias", "end", "pd_end2_moff0", "end2_orig", "member"])
    assert pal["end"] == methods.COLORS["end"] and pal["member"] == methods.COLORS["member"]
    variants = [pal[g] for g in ("end2_orig", "pd_end2_bias", "pd_end2_moff0")]
    assert len(set(variants)) == 3 and set(variants) <= set(methods.VARIANT_PALETTE)


def test_outlier_limits_keep_a_method_that_fails_as_a_group_and_mark_a_lone_point():
    """The quick look's BLEU: members 5.5-6.4, students 2.9-4.3, both EnD² variants 0.3-1.1;
    every value is on the axis. The token sweep's NLL gaps: all within 0.1 but one at 1.72;
    that one is left to the edge marker."""
    ref = [5.47, 6.10, 5.81, 5.85, 6.10, 6.40]
    bleu = [3.54, 3.04, 0.43, 0.60, 0.29, 1.12, 4.33, 3.39, 3.06, 2.90]
    lo, hi = plotting.outlier_limits(bleu, ref)
    assert lo < 0.29 and hi > 6.40
    gaps = [0.01, 0.02, 0.03, 0.08, 0.09, 0.05, 0.04, 0.06, 1.72, 0.0, 0.03]
    lo, hi = plotting.outlier_limits(gaps, [0.02, 0.04, 0.03, 0.05])
    assert 0.09 < hi < 0.5 and lo < 0.0
    agree = [0.93, 0.95, 0.94, 0.86, 0.87, 0.92, 0.109, 0.80]
    lo, hi = plotting.outlier_limits(agree, [0.854, 0.882, 1.0])
    assert 0.109 < lo < 0.80 and hi > 1.0
    assert plotting.outlier_limits([np.nan], []) == (-1.0, 1.0)  # nothing finite to show
