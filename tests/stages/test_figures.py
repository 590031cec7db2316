"""Stage figures: every figure of each task, drawn from the files it is given and no others."""

import argparse
import shutil

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from pipeline import methods
from pipeline.stages import figures as F
from pipeline.stages.aggregate import aggregate
from pipeline.stages.gradient_analysis import rank_profile, run
from pipeline.tasks import spec
from tests.tasks.text.test_summary import fake_tidy


@pytest.fixture(scope="module")
def gradient(tmp_path_factory):
    d = tmp_path_factory.mktemp("grad")
    run(ks=(10, 100), batch=2).to_csv(d / "head_share.csv", index=False)
    rank_profile(100).to_csv(d / "rank_profile.csv", index=False)
    return d


def _args(**kw):
    base = dict(per_example=[], tidy=None, histories=[], shares=None, profile=None, sweep=None)
    base.update(data_manifest=None)
    base.update(curves=[], token_profile=None, token_gate=None)
    base.update(ece_bins=10, ood_set="permuted", measure="knowledge")
    return argparse.Namespace(**{**base, **kw})


def test_image_figures_from_explicit_files(evaluated, prepared, gradient, tmp_path):
    d, _ = evaluated
    files = sorted(d.glob("*/per_example.safetensors"))
    tables = tmp_path / "tables"
    aggregate("image", sorted(d.glob("*/metrics.csv")), tables)
    hist = [d / "student" / "history.csv"]
    args = _args(
        per_example=files,
        tidy=tables / "metrics_tidy.csv",
        histories=hist,
        shares=gradient / "head_share.csv",
        profile=gradient / "rank_profile.csv",
        data_manifest=prepared / "manifest.json",
    )
    paths = F.draw("image", tmp_path / "fig", args)
    assert sorted(p.stem for p in paths if p.suffix == ".png") == sorted(spec("image").figures)
    assert all(p.stat().st_size > 1000 for p in paths)
    reps = F._representatives(files[:2])  # only what it is given is drawn
    assert set(reps) == {F.parse_system(f.parent.name)[0] for f in files[:2]}


def test_failed_systems_are_marked_relative_to_the_ensemble():
    base = {"ensemble": 0.08, "end": 0.09, "pd_fkl": 0.63, "member": 0.1}
    assert F._failed(base) == {"pd_fkl"}
    assert F._failed({"end": 0.1, "end2": 0.12}) == set()  # no ensemble: the median


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


def test_class_sweep_learning_curve_and_token_gradient_figures(tmp_path, gradient):
    aggregate("text", fake_tidy(tmp_path), tmp_path / "tables")
    profile, gate = fake_token_gradients(tmp_path)
    args = _args(
        sweep=tmp_path / "tables" / "sweep.csv",
        shares=gradient / "head_share.csv",
        curves=fake_curves(tmp_path / "runs"),
        token_profile=profile,
        token_gate=gate,
    )
    paths = F.draw("text", tmp_path / "fig", args)
    assert [p.name for p in paths] == [
        "class_sweep.png",
        "class_sweep.pdf",
        "learning_curves.png",
        "learning_curves.pdf",
        "token_gradients.png",
        "token_gradients.pdf",
    ]
    assert all(p.stat().st_size > 1000 for p in paths)
    curves = F.read_curves(args.curves)
    assert sorted(curves["vocab"].unique()) == [100, 1000]
    assert set(curves["group"]) == {"end", "pd_end2_moff0"} and len(curves) == 32
    with pytest.raises(ValueError, match="no curve.csv given"):
        F.learning_curves([], tmp_path / "fig3")
    with pytest.raises(ValueError, match="the OOD set 'kjv' is not in the sweep"):
        F.draw("text", tmp_path / "fig2", _args(sweep=args.sweep, ood_set="kjv"))


def test_head_share_labels_are_the_registry_names(gradient):
    shares = pd.read_csv(gradient / "head_share.csv")
    assert set(shares["method"]) == {"end", "end2", "pd_end2"}


def test_learning_curves_legend_names_every_group_and_variants_get_distinct_colours(
    tmp_path, monkeypatch
):
    """A group that runs at the second V only is still in the legend, and two variants whose
    name-hash colours collide (pd_end2_moff0, pd_end2_bias) are drawn in different colours."""
    files = fake_curves(tmp_path / "runs")
    for group in ("pd_end2_bias", "end_bias"):  # at V = 1000 only
        d = tmp_path / "runs" / "V1000" / "students" / group / "seed0"
        d.mkdir(parents=True)
        shutil.copyfile(files[0], d / "curve.csv")
        files.append(d / "curve.csv")
    figs = []
    monkeypatch.setattr(F, "_save", lambda fig, out, name: figs.append(fig) or [])
    monkeypatch.setattr(F, "_PALETTE", F.palette(["end", "pd_end2_moff0", "pd_end2_bias",
                                                  "end_bias"]))  # fmt: skip
    F.learning_curves(files, tmp_path / "fig")
    legend = [t.get_text() for t in figs[0].axes[0].get_legend().get_texts()]
    assert {"EnD", "PD-EnD² moff0", "PD-EnD² bias", "EnD bias", "single member"} == set(legend)
    colours = {line.get_label(): line.get_color() for ax in figs[0].axes for line in ax.get_lines()}
    assert colours["PD-EnD² moff0"] != colours["PD-EnD² bias"]
    plt.close(figs[0])


def test_palette_gives_a_runs_variants_distinct_colours():
    """The name hash of methods.color can collide; the run's palette cannot (up to 7 variants)."""
    assert methods.color("pd_end2_moff0") == methods.color("pd_end2_bias")
    pal = F.palette(["pd_end2_bias", "end", "pd_end2_moff0", "end2_orig", "member"])
    assert pal["end"] == methods.COLORS["end"] and pal["member"] == methods.COLORS["member"]
    variants = [pal[g] for g in ("end2_orig", "pd_end2_bias", "pd_end2_moff0")]
    assert len(set(variants)) == 3 and set(variants) <= set(methods.VARIANT_PALETTE)
