"""End to end: the token task's smoke config (config/text_smoke.yaml) through Snakemake: every
V and system evaluated, the sweep tables and figure, reruns, validation. About a minute."""

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from tests.workflow.helpers import REPO, job_counts, snakemake, write_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (REPO / "data" / "debian" / ".complete").is_file(),
        reason="run scripts/install.sh to fetch the corpora",
    ),
]


def test_sweep_holds_every_vocab_and_system(text_smoke):
    cfg, _, results = text_smoke
    tidy = pd.read_csv(results / "tables" / "metrics_tidy.csv", keep_default_na=False)
    groups = {"member", "ensemble", *cfg["students"]["methods"]}
    for v in cfg["vocab_sizes"]:
        assert set(tidy[tidy["vocab"] == v]["group"]) == groups
    vals = pd.to_numeric(tidy["value"])
    assert np.isfinite(vals[tidy["metric"] != "prr"]).all()
    bounded = tidy["metric"].isin(["accuracy", "agreement", "ood_auroc", "ood_aupr"])
    assert vals[bounded].between(0, 1).all()
    test = tidy[tidy["split"] == "test"].assign(value=vals)
    for v in cfg["vocab_sizes"]:
        nll = test[(test["vocab"] == v) & (test["metric"] == "nll")].set_index("system")["value"]
        members = [nll[f"member-{s}"] for s in cfg["ensemble"]["seeds"]]
        assert nll["ensemble"] <= np.mean(members) + 1e-9  # -ln mean p <= mean -ln p (Jensen)
        # a member's agreement is its per-token top-1 against the ensemble's, as cached
        cache = load_file(results / f"V{v}" / "teacher" / "test.safetensors")
        s = cfg["ensemble"]["seeds"][0]
        want = (cache[f"member-{s}.pred"] == cache["ensemble.pred"]).double().mean().item()
        agree = test[(test["vocab"] == v) & (test["metric"] == "agreement")]
        assert agree[agree["system"] == f"member-{s}"]["value"].item() == pytest.approx(want)
    # how confident members and ensemble are: their top probability, as the cache holds it
    conf = test[test["metric"].isin(["top_prob", "confident_share"])]
    assert set(conf["group"]) == {"member", "ensemble"} and conf["value"].between(0, 1).all()
    v, s = cfg["vocab_sizes"][0], cfg["ensemble"]["seeds"][0]
    cache = load_file(results / f"V{v}" / "teacher" / "test.safetensors")
    top = conf[(conf["vocab"] == v) & (conf["system"] == f"member-{s}")]
    want = float((-cache[f"member-{s}.neg_confidence"].double()).mean())
    assert top[top["metric"] == "top_prob"]["value"].item() == pytest.approx(want)
    tail = test[(test["vocab"] == v) & (test["metric"] == "tail_log_mean")]
    assert list(tail["system"]) == ["ensemble"]  # the ensemble's tail, from the cache
    want = float(cache["tail_log_mean"].double().mean())
    assert tail["value"].item() == pytest.approx(want) and want < np.log(1 / v)
    ood = tidy[tidy["metric"] == "ood_auroc"]
    assert set(ood["split"]) == {f"ood_{s}" for s in cfg["ood"]["sets"]}
    assert "seq_nll" in set(ood["measure"])
    speed = pd.read_csv(results / "tables" / "speed.csv")
    assert set(speed["method"]) == {"cross_entropy", *cfg["students"]["methods"]}
    assert (speed["tokens_per_s"] > 0).all()
    assert (results / "figures" / "class_sweep.png").stat().st_size > 10_000
    sweep = pd.read_csv(results / "tables" / "sweep.csv")
    n = sweep[(sweep["group"] == "pd_end2") & (sweep["metric"] == "nll")]["count"]
    assert (n == len(cfg["students"]["seeds"])).all()


def test_learning_curves_convergence_check_and_variant_groups(text_smoke):
    cfg, _, results = text_smoke
    every = cfg["students"]["curve_every"]
    for v in cfg["vocab_sizes"]:
        for group in cfg["students"]["methods"]:
            curve = pd.read_csv(results / f"V{v}" / "students" / group / "seed0" / "curve.csv")
            hist = pd.read_csv(results / f"V{v}" / "students" / group / "seed0" / "history.csv")
            steps = list(curve["step"])
            assert steps[0] == 0 and all(s % every == 0 for s in steps[1:-1])
            assert steps == sorted(set(steps)) and len(steps) >= 3
            # the last point is the trained student: its agreement is the epoch's validation
            assert curve["val_agreement"].iloc[-1] == pytest.approx(hist["val_agreement"].iloc[-1])
            assert (curve["val_kl"] >= 0).all() and curve["member_agreement"].nunique() == 1
    conv = pd.read_csv(results / "tables" / "convergence.csv")
    assert list(conv["V"]) == cfg["vocab_sizes"]
    assert (
        conv["converged"].str.match(r"^(yes|no) \(EnD [01]\.\d{3} vs member [01]\.\d{3}\)$").all()
    )
    assert "PD-EnD² moff0 bias" in conv.columns  # the variant group, named after its method
    assert (results / "figures" / "learning_curves.png").stat().st_size > 10_000
    log = (results / f"V{cfg['vocab_sizes'][0]}" / "logs" / "distill" / "pd_end2_moff0_bias"
           / "seed0.log").read_text()  # fmt: skip
    assert "method=pd_end2" in log and "output bias set to the ensemble's log class-marginal" in log


def test_second_run_does_nothing(text_smoke):
    _, cfgfile, _ = text_smoke
    r = snakemake("-n", "--configfile", cfgfile)
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, r.stdout[-2000:]


def test_pd_change_reruns_only_pd_students(text_smoke, tmp_path):
    cfg, _, _ = text_smoke
    methods = {**cfg["students"]["methods"], "pd_end2": {"target_offset": 2.0}}
    changed = {**cfg, "students": {**cfg["students"], "methods": methods}}
    r = snakemake("-n", "--configfile", write_config(changed, tmp_path / "c.yaml"))
    counts = job_counts(r.stdout + r.stderr)
    n = len(cfg["students"]["seeds"]) * len(cfg["vocab_sizes"])
    assert counts.get("distill") == n and counts.get("evaluate") == n, counts
    assert {"train_member", "cache_teacher", "prepare_data"}.isdisjoint(counts)


def test_adding_a_vocab_size_trains_only_that_point(text_smoke, tmp_path):
    cfg, _, _ = text_smoke
    changed = {**cfg, "vocab_sizes": [*cfg["vocab_sizes"], 200]}
    r = snakemake("-n", "--configfile", write_config(changed, tmp_path / "c.yaml"))
    counts = job_counts(r.stdout + r.stderr)
    assert counts.get("train_member") == len(cfg["ensemble"]["seeds"]), counts
    assert "prepare_data" not in counts and counts.get("cache_teacher") == 1


def test_bad_text_config_stops_before_any_job(text_smoke, tmp_path):
    cfg, _, _ = text_smoke
    for bad, word in (
        ({**cfg, "vocab_sizes": [2]}, "vocab_sizes"),
        ({**cfg, "ood": {**cfg["ood"], "sets": ["latin"]}}, "latin"),
        ({**cfg, "students": {**cfg["students"], "model": {"name": "gru"}}}, "gru"),
        ({**cfg, "figure": {"ood_set": "kjv"}, "ood": {**cfg["ood"], "sets": ["permuted"]}}, "kjv"),
    ):
        r = snakemake("-n", "--configfile", write_config(bad, tmp_path / "bad.yaml"))
        assert r.returncode != 0 and word in r.stdout + r.stderr, (word, r.stderr[-1500:])


def test_missing_corpus_is_named(text_smoke, tmp_path):
    cfg, _, _ = text_smoke
    bad = {**cfg, "results": str(tmp_path / "r"), "dataset": {**cfg["dataset"], "root": "nowhere"}}
    r = snakemake("-n", "--configfile", write_config(bad, tmp_path / "bad.yaml"))
    assert r.returncode != 0 and "nowhere/usr/lib/R/site-library/janeaustenr" in r.stdout + r.stderr


def test_a_group_can_run_at_some_vocab_sizes_only(text_smoke, tmp_path):
    """group_vocab_sizes: the named group's students (and their evaluations) exist only at its V;
    the others and every member still run at every V. A wrong group or V stops the run."""
    cfg, _, _ = text_smoke
    small, seeds = min(cfg["vocab_sizes"]), len(cfg["students"]["seeds"])
    groups = len(cfg["students"]["methods"])
    fresh = {**cfg, "results": str(tmp_path / "r"), "group_vocab_sizes": {"pd_end2": [small]}}
    r = snakemake("-n", "--configfile", write_config(fresh, tmp_path / "c.yaml"))
    counts = job_counts(r.stdout + r.stderr)
    vocabs = len(cfg["vocab_sizes"])
    students = (groups * vocabs - (vocabs - 1)) * seeds
    assert counts.get("distill") == students, counts
    members = len(cfg["ensemble"]["seeds"])
    assert counts.get("evaluate") == students + vocabs * (members + 1), counts
    assert counts.get("train_member") == members * vocabs, counts
    done = {**cfg, "group_vocab_sizes": {"pd_end2": [small]}}  # on the finished run: no student
    r = snakemake("-n", "--configfile", write_config(done, tmp_path / "d.yaml"))
    counts = job_counts(r.stdout + r.stderr)
    assert r.returncode == 0 and {"distill", "evaluate", "train_member"}.isdisjoint(counts), counts
    for bad, words in (
        ({"nogroup": [small]}, f"group_vocab_sizes.nogroup: [{small}] is not allowed"),
        ({"nogroup": [small]}, "a method group of students.methods"),
        ({"pd_end2": [small, 7]}, "is not allowed: a subset of vocab_sizes"),
        (
            {g: [max(cfg["vocab_sizes"])] for g in cfg["students"]["methods"]},
            "gradient_analysis.token_vocab: 50 is not allowed: a V at which a method group runs",
        ),
    ):
        wrong = {**cfg, "group_vocab_sizes": bad}
        r = snakemake("-n", "--configfile", write_config(wrong, tmp_path / "bad.yaml"))
        assert r.returncode != 0 and words in r.stdout + r.stderr, r.stderr[-1500:]


def test_a_vocab_override_retrains_only_the_students_at_that_vocab(text_smoke, tmp_path):
    """vocab_overrides: a longer budget at one V reruns every group's students there (and their
    evaluations), with that budget; members, the learning-rate trials and the other V keep
    theirs. Keys that are not quoted sizes of vocab_sizes, or a budget no job can run, stop it."""
    cfg, _, _ = text_smoke
    big, seeds = max(cfg["vocab_sizes"]), len(cfg["students"]["seeds"])
    longer = {**cfg, "vocab_overrides": {str(big): {"epochs": 2}}}
    r = snakemake("-n", "-p", "--configfile", write_config(longer, tmp_path / "c.yaml"))
    out = r.stdout + r.stderr
    counts = job_counts(out)
    students = len(cfg["students"]["methods"]) * seeds
    assert counts.get("distill") == students and counts.get("evaluate") == students, counts
    assert {"train_member", "cache_teacher", "lr_trial", "prepare_data"}.isdisjoint(counts), counts
    launches = [line for line in out.splitlines() if "pipeline.stages.distill" in line]
    assert len(launches) == students
    assert all(f"--num-classes {big} " in line and '"epochs": 2' in line for line in launches)
    for bad, words in (
        ({big: {"epochs": 2}}, f"vocab_overrides.{big}: {big} is not allowed: keys are sizes"),
        ({"7": {"epochs": 2}}, "a size of vocab_sizes"),
        ({str(big): {"lr": 0.1}}, "'lr' was unexpected"),
        ({str(big): {"warmup_epochs": 2}}, f"vocab_overrides.{big}.warmup_epochs"),
    ):
        wrong = {**cfg, "vocab_overrides": bad}
        r = snakemake("-n", "--configfile", write_config(wrong, tmp_path / "bad.yaml"))
        assert r.returncode != 0 and words in r.stdout + r.stderr, (words, r.stderr[-1500:])
