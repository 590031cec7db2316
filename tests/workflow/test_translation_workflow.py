"""End to end: the translation task's smoke config (config/translation_smoke.yaml) through
Snakemake: every V and system evaluated, BLEU as sacrebleu's command line computes it, the sweep
tables and figures, reruns, bad configs. A few minutes."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from pipeline.tasks.translation import data as TD
from pipeline.tasks.translation import vocab as Vb
from tests.workflow.helpers import REPO, job_counts, snakemake, write_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (REPO / "data" / "debian" / ".complete").is_file(),
        reason="run scripts/install.sh to fetch the corpora",
    ),
]


def test_sweep_holds_every_vocab_and_system(translation_smoke):
    cfg, _, results = translation_smoke
    tidy = pd.read_csv(results / "tables" / "metrics_tidy.csv", keep_default_na=False)
    groups = {"member", "ensemble", *cfg["students"]["methods"]}
    for v in cfg["vocab_sizes"]:
        assert set(tidy[tidy["vocab"] == v]["group"]) == groups
    vals = pd.to_numeric(tidy["value"])
    assert np.isfinite(vals[tidy["metric"] != "prr"]).all()
    bounded = tidy["metric"].isin(["accuracy", "agreement", "ood_auroc", "ood_aupr"])
    assert vals[bounded].between(0, 1).all()
    assert vals[tidy["metric"].isin(["bleu", "chrf"])].between(0, 100).all()
    test = tidy[tidy["split"] == "test"].assign(value=vals)
    for v in cfg["vocab_sizes"]:
        nll = test[(test["vocab"] == v) & (test["metric"] == "nll")].set_index("system")["value"]
        members = [nll[f"member-{s}"] for s in cfg["ensemble"]["seeds"]]
        assert nll["ensemble"] <= np.mean(members) + 1e-9  # -ln mean p <= mean -ln p (Jensen)
    ood = tidy[tidy["metric"] == "ood_auroc"]
    assert set(ood["split"]) == {"shift", *(f"ood_{s}" for s in cfg["ood"]["sets"])}
    conf = test[test["metric"] == "tail_log_mean"]
    assert set(conf["group"]) == {"ensemble"} and (conf["value"] < 0).all()
    for name in ("main", "convergence", "confidence", "prr", "ood_main", "speed"):
        assert (results / "tables" / f"{name}.md").stat().st_size > 100
    for name in ("translation_sweep", "translation_curves", "translation_gradients"):
        assert (results / "figures" / f"{name}.png").stat().st_size > 10_000


def test_bleu_is_sacrebleus_command_line_on_the_same_files(translation_smoke, tmp_path):
    """The stored hypotheses of a student, detokenised, scored by ``sacrebleu`` run as a
    program against the reference text, give the BLEU and chrF in the metrics."""
    cfg, _, results = translation_smoke
    v, group = cfg["vocab_sizes"][-1], next(iter(cfg["students"]["methods"]))
    system = f"{group}-seed{cfg['students']['seeds'][0]}"
    arrays = load_file(results / f"V{v}" / "eval" / system / "per_sentence.safetensors")
    tokens, offsets = arrays["test.hyp_tokens"].tolist(), arrays["test.hyp_offsets"].tolist()
    sp = TD.tokenizer(results / "data", "target", v)
    hyps = [Vb.decode(sp, tokens[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    refs = TD.load_split(results / "data", "test", v)["tgt_text"][: len(hyps)]
    (tmp_path / "hyp.txt").write_text("\n".join(hyps) + "\n")
    (tmp_path / "ref.txt").write_text("\n".join(refs) + "\n")
    metrics = pd.read_csv(results / f"V{v}" / "eval" / system / "metrics.csv")
    for metric in ("bleu", "chrf"):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "sacrebleu",
                str(tmp_path / "ref.txt"),
                "-i",
                str(tmp_path / "hyp.txt"),
                "-m",
                metric,
                "-b",
                "-w",
                "6",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        row = metrics[(metrics["split"] == "test") & (metrics["metric"] == metric)]
        assert row["value"].item() == pytest.approx(float(out.stdout.strip()), abs=1e-5)


def test_members_and_ensemble_are_read_from_the_teacher_artifact(translation_smoke):
    """A member's sequence-level total uncertainty is the mean of its per-token entropies along
    its own hypothesis, as stored by the teacher artifact; its hypotheses are the artifact's."""
    cfg, _, results = translation_smoke
    v, s = cfg["vocab_sizes"][0], cfg["ensemble"]["seeds"][0]
    cache = load_file(results / f"V{v}" / "teacher" / "test.safetensors")
    arrays = load_file(results / f"V{v}" / "eval" / f"member-{s}" / "per_sentence.safetensors")
    assert torch.equal(arrays["test.hyp_tokens"], cache[f"member-{s}.hyp.tokens"].to(torch.int32))
    offsets = cache[f"member-{s}.hyp.offsets"]
    total = cache[f"member-{s}.hyp.total"].double()
    want = [float(total[a:b].mean()) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    assert arrays["test.total"].double().numpy() == pytest.approx(want, rel=1e-6)


def test_second_run_does_nothing(translation_smoke):
    _, cfgfile, _ = translation_smoke
    r = snakemake("-n", "--configfile", cfgfile)
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, r.stdout[-2000:]


def test_decoding_change_reruns_the_teacher_and_evaluations_only(translation_smoke, tmp_path):
    cfg, _, _ = translation_smoke
    changed = {**cfg, "teacher": {**cfg["teacher"], "beam": 3}}
    r = snakemake("-n", "--configfile", write_config(changed, tmp_path / "c.yaml"))
    counts = job_counts(r.stdout + r.stderr)
    assert counts.get("cache_teacher") == len(cfg["vocab_sizes"]), counts
    assert {"train_member", "distill", "prepare_data"}.isdisjoint(counts)


def test_bad_translation_config_stops_before_any_job(translation_smoke, tmp_path):
    cfg, _, _ = translation_smoke
    for bad, word in (
        ({**cfg, "vocab_sizes": ["many"]}, "vocab_sizes"),
        ({**cfg, "ood": {**cfg["ood"], "sets": ["kjv"]}}, "kjv"),
        ({**cfg, "students": {**cfg["students"], "model": {"name": "lstm"}}}, "lstm"),
        ({**cfg, "teacher": {**cfg["teacher"], "beam": "wide"}}, "beam"),
    ):
        r = snakemake("-n", "--configfile", write_config(bad, tmp_path / "bad.yaml"))
        assert r.returncode != 0 and word in r.stdout + r.stderr, (word, r.stderr[-1500:])


def test_missing_corpus_is_named(translation_smoke, tmp_path):
    cfg, _, _ = translation_smoke
    bad = {**cfg, "results": str(tmp_path / "r"), "dataset": {**cfg["dataset"], "root": "nowhere"}}
    r = snakemake("-n", "--configfile", write_config(bad, tmp_path / "bad.yaml"))
    assert r.returncode != 0 and "nowhere/usr/share/sword/mods.d" in r.stdout + r.stderr


def test_confidence_side_by_side_with_the_token_task(translation_smoke, text_smoke, tmp_path):
    """scripts/confidence.py puts the two runs' confidence tables one under the other: each
    block is that run's own tables/confidence.csv, read from its members' and ensemble's
    evaluations alone; a folder without them is refused by name."""
    _, _, tr = translation_smoke
    _, _, tx = text_smoke
    out = subprocess.run(
        [sys.executable, "scripts/confidence.py", str(tx), str(tr), "--out", tmp_path / "c.csv"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "mean ln π̄ tail" in out.splitlines()[0]
    both = pd.read_csv(tmp_path / "c.csv", keep_default_na=False)
    # both folders are called results/: each is then labelled by its path
    assert list(both["run"].unique()) == [str(tx), str(tr)]
    for run in (tx, tr):
        own = pd.read_csv(run / "tables" / "confidence.csv", keep_default_na=False)
        block = both[both["run"] == str(run)].drop(columns="run").reset_index(drop=True)
        pd.testing.assert_frame_equal(block[own.columns], own, check_dtype=False)
        assert list(block.columns[2:]) == list(own.columns[2:])  # the same columns, same order
    bad = subprocess.run(
        [sys.executable, "scripts/confidence.py", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode != 0 and "no V*/eval/member-*" in bad.stderr
    twice = subprocess.run(
        [sys.executable, "scripts/confidence.py", str(tr), str(tr)],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert twice.returncode != 0 and "given twice" in twice.stderr
