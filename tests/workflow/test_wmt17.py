"""config/wmt17.yaml, the paper-scale translation run, on a tiny made-up corpus in WMT's format
(plain-text files, one sentence per line, source and target aligned by line): it dry-runs with
its own settings, and the same rules run end to end with a tiny model, a joint vocabulary and an
OOD set read from a file."""

import json
import random

import pandas as pd
import pytest
import yaml

from tests.workflow.helpers import REPO, job_counts, snakemake, write_config

pytestmark = pytest.mark.slow

WORDS = 24


def sentence_pair(rng: random.Random) -> tuple[str, str]:
    """A made-up source sentence and its 'translation': each word mapped, adjacent pairs
    swapped (a little reordering to learn)."""
    src = [rng.randrange(WORDS) for _ in range(rng.randint(3, 9))]
    tgt = [f"v{w}" for w in src]
    for i in range(0, len(tgt) - 1, 2):
        tgt[i], tgt[i + 1] = tgt[i + 1], tgt[i]
    return " ".join(f"w{w}" for w in src), " ".join(tgt)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("wmt_tiny")
    rng = random.Random(0)
    for name, n in (
        ("train", 300),
        ("newstest2016", 30),
        ("newstest2017", 30),
        ("newstest2014", 20),
    ):
        pairs = [sentence_pair(rng) for _ in range(n)]
        if name == "train":
            pairs[5] = ("", "v1 v2")  # an empty side: dropped and counted
        (root / f"{name}.en").write_text("\n".join(s for s, _ in pairs) + "\n")
        (root / f"{name}.de").write_text("\n".join(t for _, t in pairs) + "\n")
    (root / "other.en").write_text("\n".join(f"x{i} y{i} z{i}" for i in range(15)) + "\n")
    return root


def wmt17(root, **changes) -> dict:
    cfg = yaml.safe_load((REPO / "config" / "wmt17.yaml").read_text())
    cfg["dataset"] = {**cfg["dataset"], "root": str(root)}
    cfg["ood"] = {**cfg["ood"], "files": {"other": "other.en"}}
    cfg.update(changes)
    return cfg


def test_wmt17_config_dry_runs_with_its_own_settings(corpus, tmp_path):
    cfg = wmt17(corpus, results=str(tmp_path / "results"))
    r = snakemake("-n", "-p", "--configfile", write_config(cfg, tmp_path / "c.yaml"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    counts = job_counts(r.stdout + r.stderr)
    assert counts["train_member"] == 10 and counts["distill"] == 3, counts
    assert counts["evaluate"] == 10 + 1 + 3 and counts["cache_teacher"] == 1
    # the students learn on the ensemble's translations of the train sources (the paper)
    assert counts["translate_shard"] == 64 and counts["ensemble_translations"] == 1
    assert "pipeline.launch --processes 8 --nodes 1 -- pipeline.stages.train" in r.stdout  # DDP


def test_wmt17_rules_run_end_to_end_on_the_tiny_corpus(corpus, tmp_path):
    tiny = {"name": "transformer", "dim": 16, "heads": 2, "enc_layers": 1, "dec_layers": 1,
            "ffn": 32, "dropout": 0.1, "max_len": 64}  # fmt: skip
    base = wmt17(corpus)
    small = {"model": tiny, "epochs": 1, "batch_size": 32, "warmup_steps": 5, "val_size": 10}
    cfg = wmt17(
        corpus,
        results=str(tmp_path / "results"),
        device="cpu",
        threads=1,
        resources={"mem_mb": 2000, "runtime": 10, "gpu": 0},
        dataset={**base["dataset"], "spm_sentences": None},
        vocab_sizes=[30],
        ensemble={**base["ensemble"], **small, "seeds": [0, 1]},
        students={**base["students"], **small, "curve_every": 5},
        teacher={"beam": 2, "alpha": 1.0, "batch": 8, "eval_size": 10},
        gradient_analysis={"token_vocab": 30, "token_sentences": 5},
        ensemble_translations={"shards": 2},
    )
    r = snakemake("--cores", 2, "--configfile", write_config(cfg, tmp_path / "c.yaml"))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    results = tmp_path / "results"
    manifest = yaml.safe_load((results / "data" / "manifest.json").read_text())
    assert manifest["joint_vocab"] and manifest["source_vocab"] == 30
    assert manifest["dropped"]["empty"] == 1 and manifest["splits"]["train"]["n"] == 299
    assert (results / "data" / "spm" / "source.model").read_bytes() == (
        results / "data" / "spm" / "target_V30.model"
    ).read_bytes()
    tidy = pd.read_csv(results / "tables" / "metrics_tidy.csv", keep_default_na=False)
    assert set(tidy["group"]) == {"member", "ensemble", *cfg["students"]["methods"]}
    assert {"ood_other", "ood_permuted", "shift"} <= set(tidy["split"])
    assert set(tidy[tidy["metric"] == "bleu"]["split"]) == {"test", "shift"}
    assert (results / "tables" / "convergence.md").is_file()
    # every student learnt on the ensemble's translations of all 299 train sources
    translated = json.loads(
        (results / "V30" / "ensemble_translations" / "manifest.json").read_text()
    )
    assert translated["rows"] == 299
    for method in cfg["students"]["methods"]:
        log = (results / "V30" / "logs" / "distill" / method / "seed0.log").read_text()
        assert f"pairs=299 target tokens={translated['target_tokens']} " in log
