"""Fault injection through the real entry points (issue 11): bad config values through
``snakemake -n``; truncated, bit-flipped, foreign and stale artifacts, a diverging learning rate
and killed jobs through the stage command lines and Snakemake, on copies of the smoke runs.

Every case asserts what a user needs: a config error before any job that names the key and what
is allowed; an error naming the file and the rule that rebuilds it (exit status 2, no
traceback); or a resume that ends exactly where a clean run does. The table of cases is
docs/reliability.md.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.checkpoint import CHECKPOINT_MINUTES_ENV
from pipeline.io import save_model
from tests.workflow.helpers import REPO, snakemake, write_config

pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------- helpers
def stage(name: str, *args, env=None, timeout=300) -> subprocess.CompletedProcess:
    """``python -m pipeline.stages.<name> args`` as a rule runs it."""
    return subprocess.run(
        [sys.executable, "-m", f"pipeline.stages.{name}", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def refused(r: subprocess.CompletedProcess, *words: str) -> str:
    """The stage stopped with a user error (exit 2) whose one message holds ``words``."""
    out = r.stdout + r.stderr
    assert r.returncode == 2, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    for w in words:
        assert w in r.stderr, (w, r.stderr[-2000:])
    return r.stderr


def config_refused(cfg: dict, tmp_path: Path, *words: str) -> None:
    """``snakemake -n`` stops on the config (no job runs) with a message holding ``words``."""
    r = snakemake("-n", "--configfile", write_config(cfg, tmp_path / "bad.yaml"))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Job stats" not in out, out[-2000:]
    for w in words:
        assert w in out, (w, out[-2000:])


def flip_bit(path: Path, at: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x04
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def member_cfg(model: Path) -> dict:
    """The config a member or student was trained with (its metadata), as the rule passes it."""
    cfg = json.loads(model.with_suffix(".json").read_text())["config"]
    return {k: v for k, v in cfg.items() if k != "device"}


@pytest.fixture
def run(smoke, tmp_path):
    """A private copy of the smoke run's data, members, teacher cache and PD-EnD2 student."""
    _, _, results = smoke
    r = tmp_path / "r"
    for part in ("data", "members", "teacher", "students/pd_end2"):
        shutil.copytree(results / part, r / part)
    return r


def members(r: Path) -> list[Path]:
    return sorted(r.glob("members/seed*/model.safetensors"))


def teacher_args(r: Path, out: Path) -> list:
    ms = members(r)
    seeds = [int(m.parent.name[4:]) for m in ms]
    return [
        "--task",
        "image",
        "--data",
        r / "data",
        "--members",
        *ms,
        "--seeds",
        *seeds,
        "--out",
        out,
        "--device",
        "cpu",
        "--threads",
        1,
    ]


def train_args(r: Path, cfg: dict, out: Path, ckpt: Path, seed: int = 0) -> list:
    return [
        "--task",
        "image",
        "--data",
        r / "data",
        "--seed",
        seed,
        "--config-json",
        json.dumps(cfg),
        "--out",
        out,
        "--ckpt",
        ckpt,
        "--device",
        "cpu",
        "--threads",
        1,
    ]


def student(r: Path) -> Path:
    return r / "students/pd_end2/seed0/model.safetensors"


def evaluate_args(r: Path, out: Path, teacher: Path | None = None) -> list:
    return [
        "--task",
        "image",
        "--system",
        "pd_end2-seed0",
        "--data",
        r / "data",
        "--teacher",
        teacher or r / "teacher",
        "--model",
        student(r),
        "--out",
        out,
        "--device",
        "cpu",
    ]


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# ----------------------------------------------------------------------------- bad config
def _students(cfg, **kw):
    return {**cfg, "students": {**cfg["students"], **kw}}


def _ensemble(cfg, **kw):
    return {**cfg, "ensemble": {**cfg["ensemble"], **kw}}


CONFIG_CASES = {
    "results empty": (lambda c: {**c, "results": ""}, ["results", "no spaces"]),
    "results with a space": (lambda c: {**c, "results": "my results"}, ["results", "no spaces"]),
    "label_smoothing 1": (
        lambda c: _ensemble(c, label_smoothing=1),
        ["label_smoothing"],
    ),
    "betas with sgd": (
        lambda c: _students(c, optimizer="sgd", betas=[0.9, 0.99]),
        ["students.betas", "does not apply to optimizer 'sgd'"],
    ),
    "momentum with adamw": (
        lambda c: _ensemble(c, momentum=0.9),
        ["ensemble.momentum", "does not apply to optimizer 'adamw'"],
    ),
    "nesterov sgd without momentum": (
        lambda c: _students(c, optimizer="sgd", momentum=0),
        ["students.momentum", "Nesterov SGD needs momentum > 0"],
    ),
    "no severities with corruptions": (
        lambda c: {**c, "ood": {**c["ood"], "severities": []}},
        ["ood.severities"],
    ),
    "override of a seed not trained": (
        lambda c: _ensemble(c, overrides={"7": {"lr": 0.1}}),
        ["ensemble.overrides.7", "a seed of ensemble.seeds"],
    ),
    "override keyed by an integer": (
        lambda c: _ensemble(c, overrides={0: {"lr": 0.1}}),
        ["ensemble.overrides.0", "quote it"],
    ),
    "milestone beyond epochs": (
        lambda c: _students(c, schedule="multistep", milestones=[1, 9]),
        ["students.milestones", "epochs between 1 and"],
    ),
    "warmup as long as training": (
        lambda c: _ensemble(c, warmup_epochs=c["ensemble"]["epochs"]),
        ["ensemble.warmup_epochs", "fewer than epochs"],
    ),
    "unknown method option": (
        lambda c: _students(c, methods={"pd_end2": {"smoothing": 0.1}}),
        ["smoothing"],
    ),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_value_stops_before_any_job(smoke, tmp_path, case):
    cfg, _, _ = smoke
    change, words = CONFIG_CASES[case]
    config_refused(change(json.loads(json.dumps(cfg))), tmp_path, *words)


def test_text_val_and_test_on_the_same_residue(text_smoke, tmp_path):
    cfg, _, _ = text_smoke
    bad = {**cfg, "dataset": {**cfg["dataset"], "val_mod": 3, "test_mod": 3}}
    config_refused(bad, tmp_path, "dataset.test_mod", "other than dataset.val_mod")


def test_vocabulary_beyond_the_corpus_is_named(text_smoke, tmp_path):
    cfg, _, results = text_smoke
    v = cfg["vocab_sizes"][0]
    model_cfg = member_cfg(results / f"V{v}/members/seed0/model.safetensors")
    r = stage(
        "train", "--task", "text", "--num-classes", 10**7, "--data", results / "data",
        "--seed", 0, "--config-json", json.dumps(model_cfg), "--out", tmp_path / "m.safetensors",
        "--ckpt", tmp_path / "c.pt", "--device", "cpu",
    )  # fmt: skip
    refused(r, "vocab_sizes", "at most", "distinct words")
    assert not (tmp_path / "m.safetensors").exists()


def test_imagefolder_val_size_beyond_the_images(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        for split in ("train", "val"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / cls / "x.png")
    cfg = {
        "dataset": {"name": "imagefolder", "train_dir": str(tmp_path / "train"),
                    "val_dir": str(tmp_path / "val"), "val_size": 2, "split_seed": 0},
        "ood": {},
    }  # fmt: skip
    r = stage("prepare", "--task", "image", "--config-json", json.dumps(cfg), "--out",
              tmp_path / "data")  # fmt: skip
    refused(r, "dataset.val_size", "fewer than the 2 images")


# ----------------------------------------------------------------------------- bad artifacts
def test_bit_flipped_member_is_refused_by_the_teacher(run, tmp_path):
    flip_bit(members(run)[1])
    r = stage("teacher", *teacher_args(run, tmp_path / "t"))
    refused(r, "seed1/model.safetensors", "does not match the sha256", "rule train_member")
    assert not (tmp_path / "t" / "manifest.json").exists()


def test_truncated_member_is_refused(run, tmp_path):
    truncate(members(run)[0])
    refused(stage("teacher", *teacher_args(run, tmp_path / "t")), "seed0/model.safetensors",
            "rule train_member")  # fmt: skip


def test_member_without_its_metadata_is_refused(run, tmp_path):
    members(run)[2].with_suffix(".json").unlink()
    refused(stage("teacher", *teacher_args(run, tmp_path / "t")), "seed2/model.json",
            "is missing")  # fmt: skip


def test_member_of_other_code_is_refused(run, tmp_path):
    """A model marked up to date but trained by other code (``snakemake --touch``, a copy)."""
    meta_path = members(run)[0].with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "code_sha256": "0" * 64}))
    refused(stage("teacher", *teacher_args(run, tmp_path / "t")),
            "trained by other code", "rule train_member")  # fmt: skip


def test_member_with_non_finite_outputs_never_becomes_a_teacher(run, tmp_path):
    path = members(run)[1]
    state = load_file(str(path))
    meta = json.loads(path.with_suffix(".json").read_text())
    from pipeline.tasks.image.models import build_model

    model = build_model(meta["config"]["model"], meta["num_classes"], meta["in_channels"])
    model.load_state_dict(state)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    meta.pop("weights_sha256"), meta.pop("pipeline_version")
    save_model(model, path, meta)
    refused(stage("teacher", *teacher_args(run, tmp_path / "t")),
            "seed1/model.safetensors", "non-finite outputs")  # fmt: skip


def test_bit_flipped_data_split_is_refused(run, tmp_path):
    flip_bit(run / "data" / "train.safetensors")
    cfg = member_cfg(members(run)[0])
    r = stage("train", *train_args(run, cfg, tmp_path / "m.safetensors", tmp_path / "c.pt"))
    refused(r, "train.safetensors", "does not match the sha256", "rule prepare_data")


def test_broken_data_manifest_is_refused(run, tmp_path):
    truncate(run / "data" / "manifest.json")
    cfg = member_cfg(members(run)[0])
    r = stage("train", *train_args(run, cfg, tmp_path / "m.safetensors", tmp_path / "c.pt"))
    refused(r, "data/manifest.json", "is not valid JSON", "rule prepare_data")


def test_bit_flipped_teacher_cache_is_refused_by_distill(run, tmp_path):
    flip_bit(run / "teacher" / "train.safetensors")
    cfg = member_cfg(student(run))
    r = stage("distill", *train_args(run, cfg, tmp_path / "s.safetensors", tmp_path / "c.pt"),
              "--teacher", run / "teacher", "--members", *members(run))  # fmt: skip
    refused(r, "teacher/train.safetensors", "does not match the sha256", "rule cache_teacher")


def test_teacher_cache_of_other_members_is_refused(run, tmp_path):
    """A cache from another config: built from three members, given two."""
    cfg = member_cfg(student(run))
    r = stage("distill", *train_args(run, cfg, tmp_path / "s.safetensors", tmp_path / "c.pt"),
              "--teacher", run / "teacher", "--members", *members(run)[:2])  # fmt: skip
    refused(r, "other members", "rule cache_teacher")


def test_truncated_teacher_manifest_is_refused_by_evaluate(run, tmp_path):
    truncate(run / "teacher" / "manifest.json")
    refused(stage("evaluate", *evaluate_args(run, tmp_path / "e")),
            "teacher/manifest.json", "rule cache_teacher")  # fmt: skip


def test_student_of_another_ensemble_is_not_scored_against_this_teacher(run, tmp_path):
    manifest = json.loads((run / "teacher" / "manifest.json").read_text())
    manifest["member_sha256"] = manifest["member_sha256"][::-1]  # "other" members
    (run / "teacher" / "manifest.json").write_text(json.dumps(manifest))
    refused(stage("evaluate", *evaluate_args(run, tmp_path / "e")),
            "distilled from other members", "rule distill")  # fmt: skip


def test_bit_flipped_student_is_refused_by_evaluate(run, tmp_path):
    flip_bit(student(run))
    refused(
        stage("evaluate", *evaluate_args(run, tmp_path / "e")),
        "pd_end2/seed0/model.safetensors",
        "does not match the sha256",
        "rule distill",
    )
    assert not (tmp_path / "e" / "metrics.csv").exists()


def test_text_teacher_cache_bit_flip_is_refused(text_smoke, tmp_path):
    cfg, _, results = text_smoke
    v = cfg["vocab_sizes"][0]
    run = tmp_path / "r"
    shutil.copytree(results / f"V{v}/teacher", run / "teacher")
    flip_bit(run / "teacher" / "test.safetensors")
    r = stage("evaluate", "--task", "text", "--system", "ensemble", "--num-classes", v,
              "--data", results / "data", "--teacher", run / "teacher", "--out", tmp_path / "e",
              "--device", "cpu")  # fmt: skip
    refused(r, "teacher/test.safetensors", "rule cache_teacher")


def test_text_corpus_split_bit_flip_is_refused(text_smoke, tmp_path):
    cfg, _, results = text_smoke
    v = cfg["vocab_sizes"][0]
    shutil.copytree(results / "data", tmp_path / "data")
    flip_bit(tmp_path / "data" / "train.safetensors")
    model_cfg = member_cfg(results / f"V{v}/members/seed0/model.safetensors")
    r = stage("train", "--task", "text", "--num-classes", v, "--data", tmp_path / "data",
              "--seed", 0, "--config-json", json.dumps(model_cfg), "--out",
              tmp_path / "m.safetensors", "--ckpt", tmp_path / "c.pt")  # fmt: skip
    refused(r, "data/train.safetensors", "rule prepare_data")


# ----------------------------------------------------------------------------- training faults
def test_nan_producing_learning_rate_stops_loudly(run, tmp_path):
    cfg = {**member_cfg(members(run)[0]), "lr": 1e30}
    r = stage("train", *train_args(run, cfg, tmp_path / "m.safetensors", tmp_path / "c.pt"))
    assert r.returncode == 4, (r.stdout + r.stderr)[-2000:]
    assert "training loss is" in r.stderr or "gradient norm is" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "m.safetensors").exists()


def test_corrupt_checkpoint_and_leftover_temp_files_train_to_the_clean_result(run, smoke, tmp_path):
    """A half-written checkpoint is trained over; the temp files a job killed mid-write leaves
    (writes are temp + rename) are never read, and the rerun leaves none of its own."""
    _, _, results = smoke
    out, ckpt = tmp_path / "m.safetensors", tmp_path / "c.pt"
    ckpt.write_bytes(b"not a checkpoint, a half-written file")
    leftovers = [f".{out.name}.tmp999", f".{ckpt.name}.tmp999", ".history.csv.tmp999"]
    for name in leftovers:
        (tmp_path / name).write_bytes(b"half")
    r = stage("train", *train_args(run, member_cfg(members(run)[0]), out, ckpt))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ignoring unreadable checkpoint" in r.stdout + r.stderr
    assert same_weights(out, results / "members/seed0/model.safetensors")
    assert not ckpt.exists()  # a finished job leaves none
    assert sorted(p.name for p in tmp_path.glob(".*.tmp*")) == sorted(leftovers)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_job_killed_mid_epoch_resumes_to_the_clean_result(run, smoke, tmp_path, sig):
    """SIGKILL: a crash or OOM kill; SIGTERM: what SLURM sends at a time limit or scancel."""
    _, _, results = smoke
    cfg = member_cfg(members(run)[0])
    out, ckpt = tmp_path / "m.safetensors", tmp_path / "c.pt"
    args = [
        sys.executable,
        "-m",
        "pipeline.stages.train",
        *map(str, train_args(run, cfg, out, ckpt)),
    ]
    job = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not ckpt.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the first epoch's checkpoint: the job is now in epoch 2
    job.send_signal(sig)
    job.wait(timeout=60)
    assert ckpt.exists() and not out.exists(), "the job ended before it could be killed mid-run"
    r = stage("train", *train_args(run, cfg, out, ckpt))
    assert r.returncode == 0 and "resuming from" in r.stdout, (r.stdout + r.stderr)[-2000:]
    assert same_weights(out, results / "members/seed0/model.safetensors")


def test_job_killed_inside_an_epoch_resumes_at_its_last_checkpointed_step(run, smoke, tmp_path):
    """With checkpoints inside the epoch (``PROXY_END2_CHECKPOINT_MINUTES``, here after every
    step), a job killed mid-epoch loses only the steps since its last checkpoint; the rerun
    resumes at that step to the clean run's weights."""
    _, _, results = smoke
    cfg = member_cfg(members(run)[0])
    out, ckpt = tmp_path / "m.safetensors", tmp_path / "c.pt"
    args = [sys.executable, "-m", "pipeline.stages.train"]
    args += [str(a) for a in train_args(run, cfg, out, ckpt)]
    env = {**os.environ, CHECKPOINT_MINUTES_ENV: "1e-9"}
    job = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline, at = time.monotonic() + 240, (0, 0)
    while at[1] < 2 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
        if ckpt.exists():
            state = torch.load(ckpt, weights_only=True)  # written by rename: always whole
            at = (state["epoch"], state["step"])
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=60)
    assert at[1] >= 2 and not out.exists(), "the job ended before it could be killed mid-epoch"
    r = stage("train", *train_args(run, cfg, out, ckpt), env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    assert f"of epoch {at[0] + 1}/" in r.stdout and "resuming from" in r.stdout, r.stdout[-2000:]
    assert same_weights(out, results / "members/seed0/model.safetensors")


# ----------------------------------------------------------------------------- through Snakemake
def test_corrupt_member_in_a_run_names_the_file_and_the_rule(smoke, tmp_path):
    """Snakemake sees the changed member and reruns its consumers; the first one stops with the
    message in its log, and nothing downstream is written."""
    cfg, _, results = smoke
    r_dir = tmp_path / "r"
    shutil.copytree(results, r_dir)  # mtimes kept: the copy is up to date
    cfgfile = write_config({**cfg, "results": str(r_dir)}, tmp_path / "c.yaml")
    flip_bit(r_dir / "members/seed1/model.safetensors")
    before = (r_dir / "teacher/manifest.json").read_bytes()
    r = snakemake("--cores", 1, "--configfile", cfgfile, "--until", "cache_teacher")
    assert r.returncode != 0
    log = (r_dir / "logs/cache_teacher.log").read_text()
    assert "seed1/model.safetensors: does not match the sha256" in log, log[-2000:]
    assert "rule train_member rebuilds it" in log and "Traceback" not in log
    assert not (r_dir / "teacher/manifest.json").exists() or (
        (r_dir / "teacher/manifest.json").read_bytes() == before
    )


def test_stale_systems_under_results_are_not_reported(smoke, tmp_path):
    """Evaluations left by an earlier config under the same results never reach the tables."""
    cfg, _, results = smoke
    r_dir = tmp_path / "r"
    shutil.copytree(results, r_dir)
    cfgfile = write_config({**cfg, "results": str(r_dir)}, tmp_path / "c.yaml")
    old = r_dir / "eval/pd_end2-seed9"
    shutil.copytree(r_dir / "eval/pd_end2-seed0", old)
    metrics = (old / "metrics.csv").read_text().replace("pd_end2-seed0", "pd_end2-seed9")
    (old / "metrics.csv").write_text(metrics.replace(",0,", ",9,"))
    r = snakemake("--cores", 1, "--configfile", cfgfile, "--forcerun", "aggregate",
                  "--until", "aggregate")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    tidy = (r_dir / "tables/metrics_tidy.csv").read_text()
    assert "pd_end2-seed0" in tidy and "pd_end2-seed9" not in tidy
