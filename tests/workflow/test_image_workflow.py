"""End to end: the smoke config through Snakemake (subprocess), reruns, the figures target,
config validation. About a minute on 2 cores."""

import re
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.tables import read_tidy
from pipeline.tasks import spec
from tests.workflow.helpers import REPO, job_counts, snakemake, write_config

pytestmark = pytest.mark.slow


def test_tables_hold_every_system_with_sane_metrics(smoke):
    cfg, _, results = smoke
    tidy = read_tidy(results / "tables" / "metrics_tidy.csv")
    systems = set(tidy["system"])
    assert {f"member-{s}" for s in cfg["ensemble"]["seeds"]} <= systems and "ensemble" in systems
    for method in cfg["students"]["methods"]:
        assert f"{method}-seed0" in systems
    assert np.isfinite(tidy["value"]).all()
    bounded = tidy["metric"].isin(["accuracy", "ece", "ood_auroc", "ood_aupr"])
    assert tidy.loc[bounded, "value"].between(0, 1).all()
    acc = tidy[(tidy["split"] == "test") & (tidy["metric"] == "accuracy")]
    members = acc[acc["group"] == "member"]["value"]
    ensemble = acc[acc["group"] == "ensemble"]["value"].item()
    assert ensemble >= members.mean()
    main = pd.read_csv(results / "tables" / "main.csv", index_col=0)
    assert list(main.index) == ["Single model", "Ensemble", "EnD", "EnD²", "PD-EnD²", "PD-FKL"]
    for name in spec("image").figure_names:
        assert (results / "figures" / f"{name}.png").stat().st_size > 1000
        assert (results / "figures" / f"{name}.pdf").is_file()


def test_second_run_does_nothing(smoke):
    _, cfgfile, _ = smoke
    r = snakemake("-n", "--configfile", cfgfile)
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, r.stdout[-2000:]


def test_figures_target_redraws_without_retraining(smoke):
    _, cfgfile, results = smoke
    figures = results / "figures"
    before = {
        p: p.stat().st_mtime_ns
        for p in results.rglob("*")
        if p.is_file() and not p.is_relative_to(figures) and "logs" not in p.parts
    }
    fig_before = {p: p.stat().st_mtime_ns for p in figures.iterdir()}
    r = snakemake("figures", "--forcerun", "figures", "--cores", 1, "--configfile", cfgfile)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert job_counts(r.stdout + r.stderr).get("figures") == 1
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before  # no model, cache, metric or table was rewritten
    assert all(p.stat().st_mtime_ns > t for p, t in fig_before.items())


def test_member_override_reruns_that_member_only(smoke, tmp_path):
    cfg, _, _ = smoke
    changed = {**cfg, "ensemble": {**cfg["ensemble"], "overrides": {"1": {"lr": 0.004}}}}
    r = snakemake("-n", "--configfile", write_config(changed, tmp_path / "c.yaml"))
    counts = job_counts(r.stdout + r.stderr)
    assert counts.get("train_member") == 1, r.stdout[-3000:]
    assert "seed1" in r.stdout and "prepare_data" not in counts
    assert counts.get("cache_teacher") == 1


def test_pd_change_reruns_only_pd_students_and_reports(smoke, tmp_path):
    cfg, _, _ = smoke
    methods = {**cfg["students"]["methods"], "pd_end2": {"model_offset": 1.0, "target_offset": 2.0}}
    changed = {**cfg, "students": {**cfg["students"], "methods": methods}}
    r = snakemake("-n", "--configfile", write_config(changed, tmp_path / "c.yaml"))
    counts = job_counts(r.stdout + r.stderr)
    n_seeds = len(cfg["students"]["seeds"])
    assert counts.get("distill") == n_seeds and counts.get("evaluate") == n_seeds, counts
    assert {"train_member", "cache_teacher", "prepare_data"}.isdisjoint(counts)
    assert counts.get("aggregate") == 1 and counts.get("figures") == 1


def test_bad_config_stops_before_any_job(smoke, tmp_path):
    cfg, _, _ = smoke
    bad = {**cfg, "ensemble": {**cfg["ensemble"], "learning_rate": 0.1}}
    r = snakemake("-n", "--configfile", write_config(bad, tmp_path / "bad.yaml"))
    assert r.returncode != 0 and "learning_rate" in r.stdout + r.stderr
    bad = {**cfg, "students": {**cfg["students"], "epochs": "three"}}
    r = snakemake("-n", "--configfile", write_config(bad, tmp_path / "bad2.yaml"))
    assert r.returncode != 0 and "three" in r.stdout + r.stderr
    bad = {**cfg, "ensemble": {**cfg["ensemble"], "seeds": [0]}}  # one member: no diversity
    r = snakemake("-n", "--configfile", write_config(bad, tmp_path / "bad3.yaml"))
    assert r.returncode != 0 and "config key ensemble.seeds: [0]" in r.stdout + r.stderr
    assert "Job stats" not in r.stdout


def test_killed_training_resumes_on_rerun(smoke, tmp_path):
    """Kill every member after one epoch (as a time limit would), rerun: each resumes from its
    checkpoint and ends bit-identical to the uninterrupted smoke run."""
    import os

    from safetensors.torch import load_file

    cfg, _, results = smoke
    cfgfile = write_config({**cfg, "results": str(tmp_path / "r")}, tmp_path / "c.yaml")
    env = {**os.environ, "PROXY_END2_STOP_AFTER_EPOCH": "1"}
    r = subprocess.run(
        [
            "snakemake",
            "--cores",
            "2",
            "--configfile",
            str(cfgfile),
            "--until",
            "train_member",
            "--keep-going",
        ],  # every member starts (and is stopped), not just the first two
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert r.returncode != 0  # the jobs were stopped
    seeds = cfg["ensemble"]["seeds"]
    assert not any((tmp_path / f"r/members/seed{s}/model.safetensors").exists() for s in seeds)
    r = snakemake("--cores", 2, "--configfile", cfgfile, "--until", "train_member")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for s in seeds:
        log = (tmp_path / f"r/logs/train_member/seed{s}.log").read_text()
        assert "resuming from" in log and "after epoch 1/" in log
        a = load_file(str(tmp_path / f"r/members/seed{s}/model.safetensors"))
        b = load_file(str(results / f"members/seed{s}/model.safetensors"))
        assert all(torch_equal(a[k], b[k]) for k in a)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_resource_records_are_aggregated(smoke):
    _, _, results = smoke
    table = pd.read_csv(results / "tables" / "resources.csv")
    assert {"train_member", "cache_teacher", "distill", "evaluate"} <= set(table["stage"])
    assert (table["wall_s"] > 0).all() and (table["samples_per_s"] > 0).all()
    assert set(table["device"]) == {"cpu"}


def test_report_page_holds_figures_and_tables(smoke, tmp_path):
    _, cfgfile, _ = smoke
    page = tmp_path / "report.html"
    r = snakemake("--report", page, "--configfile", cfgfile)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    html = page.read_text(errors="replace")
    assert page.stat().st_size > 100_000
    for name in ("gradient_analysis.png", "rejection_curves.png", "main.csv", "resources.csv"):
        assert name in html


def test_data_parallel_jobs_are_launched_as_ranks(tmp_path):
    """resources.processes: 2 starts every training, caching and evaluation job through the
    launcher with one thread per rank, and asks SLURM for 2 tasks per node (the plugin's
    MPI-style job); preparation and tables stay one process."""
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    cfg.update(results=str(tmp_path / "results"), threads=1)
    cfg["resources"] = {**cfg["resources"], "processes": 2}
    r = snakemake("-n", "-p", "--configfile", write_config(cfg, tmp_path / "c.yaml"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    launcher = "python -m pipeline.launch --processes 2 --nodes 1 -- pipeline.stages."
    shells = re.findall(r"^Shell command: (.*)$", r.stdout, re.M)
    for stage in ("train", "teacher", "distill", "evaluate"):
        ranked = [s for s in shells if s.startswith(launcher + stage + " ")]
        assert ranked and all("--threads 1 " in s for s in ranked), stage
    assert any(s.startswith("python -m pipeline.stages.prepare") for s in shells)
    assert "mpi=srun, tasks_per_node=2, nodes=1, cpus_per_task=1" in r.stdout
    cfg["resources"]["gpu"] = 1  # one rank per GPU
    r = snakemake("-n", "--configfile", write_config(cfg, tmp_path / "bad.yaml"))
    assert r.returncode != 0 and "one process per GPU" in r.stdout + r.stderr
