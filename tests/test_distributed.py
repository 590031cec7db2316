"""Data-parallel jobs on the CPU (gloo, 2 processes through ``pipeline.launch``/torchrun): a
2-rank member, PD-EnD2 student and token-task student match a 1-rank run with the same global
batch, a killed rank's job resumes, and the teacher cache and the evaluation are byte-identical
to one process's.

The runs are short (10-30 SGD steps) on purpose: 2 ranks sum the gradient in another order than
1 rank, and training amplifies those float32 roundings (measured: 5e-7 to 4e-5 relative here;
0.16 after 96 steps of the smoke member, where 2 threads instead of 1 already give 0.31). AdamW
divides by the root of the second moment and magnifies them further (1e-3 after 20 steps,
measured), so SGD is the tests' optimiser. docs/cluster.md says how to compare long runs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline import distributed as D
from pipeline import launch
from pipeline.config import ConfigError, check_parallel
from pipeline.stages.distill import distill
from pipeline.stages.train import train_member

REPO = Path(__file__).resolve().parents[1]
SGD = {
    "model": {"name": "small_cnn", "width": 8},
    "epochs": 3,
    "batch_size": 50,
    "optimizer": "sgd",
    "lr": 0.05,
    "device": "cpu",
}
PD = {"method": "pd_end2", "options": {"model_offset": 1.0, "target_offset": 1.0}}
REL = 1e-4  # per tensor, relative to its largest entry (measured: 5e-7 to 4e-5)


def _launch(processes: int, stage: str, *args, env=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.launch", "--processes", str(processes), "--"]
    cmd += [f"pipeline.stages.{stage}", *map(str, args), "--device", "cpu", "--threads", "1"]
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=full_env)


def _as_one_and_two_ranks(stage: str, out: Path, *args) -> list[Path]:
    """``stage`` with ``args`` run as 1 and as 2 ranks, into ``<out>1`` and ``<out>2``."""
    outs = []
    for p in (1, 2):
        outs.append(out.with_name(f"{out.name}{p}"))
        run = _launch(p, stage, *args, "--out", outs[-1])
        assert run.returncode == 0, run.stderr[-3000:]
    return outs


def _distil_two_ranks(task, data, teacher, members, cfg, out, *extra) -> None:
    """The distill stage as 2 ranks, as the rule runs it (``extra``: ``--num-classes V``)."""
    run = _launch(2, "distill", "--task", task, "--data", data, *extra, "--teacher", teacher,
                  "--members", *members, "--seed", 0, "--config-json", _cfg_json(cfg),
                  "--out", out, "--ckpt", out.parent.with_suffix(".pt"))  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]


def _cfg_json(cfg: dict) -> str:
    return json.dumps({k: v for k, v in cfg.items() if k != "device"})


def _close(a: Path, b: Path) -> float:
    """The largest per-tensor difference of two weight files, relative to the tensor's scale."""
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    worst = 0.0
    for k in wa:
        diff = (wa[k].double() - wb[k].double()).abs().max()
        worst = max(worst, float(diff / wa[k].double().abs().max().clamp(min=1e-12)))
    return worst


def _history(path: Path) -> list[dict]:
    return json.loads(path.with_name("model.json").read_text())["history"]


def _same_metrics(h1: list[dict], h2: list[dict]) -> None:
    """Every validation metric equal to 4 significant digits (the log's precision), the global
    sample count exact."""
    for r1, r2 in zip(h1, h2, strict=True):
        assert r1["train_samples"] == r2["train_samples"]
        for k, v in r1.items():
            if k.startswith("val_") or k == "train_loss":
                assert f"{v:.4g}" == f"{r2[k]:.4g}", (k, v, r2[k])


def _member_args(data: Path, out: Path) -> list:
    """The train stage's arguments for the tests' SGD member (seed 3), written to ``out``."""
    ckpt = out.parent.with_suffix(".pt")
    return ["--task", "image", "--data", data, "--seed", 3, "--config-json", _cfg_json(SGD),
            "--out", out, "--ckpt", ckpt]  # fmt: skip


@pytest.fixture(scope="module")
def two_rank_member(prepared, tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp_member")
    out = d / "two/model.safetensors"
    run = _launch(2, "train", *_member_args(prepared, out))
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def test_launch_command(monkeypatch):
    py = sys.executable
    assert launch.command(1, 1, "m", ["-a"], {}) == [py, "-m", "m", "-a"]
    torchrun = launch.command(2, 1, "m", ["-a"], {})
    assert torchrun[1:] == ["--standalone", "--nproc-per-node=2", "-m", "m", "-a"]
    # inside a SLURM job the allocation's task count decides (scontrol, here faked)
    monkeypatch.setattr(launch, "slurm_tasks", lambda env: int(env["TASKS"]))
    slurm = {"SLURM_JOB_ID": "7", "TASKS": "4"}
    assert launch.command(2, 2, "m", ["-a"], slurm) == [
        "srun", "--ntasks=4", "--ntasks-per-node=2", "--nodes=2", "--kill-on-bad-exit=1",
        py, "-m", "m", "-a",
    ]  # fmt: skip
    # a one-task SLURM job on one node runs torchrun inside its allocation
    assert "--standalone" in launch.command(2, 1, "m", [], {"SLURM_JOB_ID": "7", "TASKS": "1"})
    # a process group of one (scripts/gpu_check.sh on one GPU): through torchrun all the same
    one = launch.command(1, 1, "m", ["-a"], {launch.GROUP_ENV: "1"})
    assert one[1:] == ["--standalone", "--nproc-per-node=1", "-m", "m", "-a"]
    with pytest.raises(ValueError, match="2 nodes need a SLURM job of 4 tasks.*no SLURM job"):
        launch.command(2, 2, "m", [], {})
    with pytest.raises(ValueError, match="here there is 2 task"):
        launch.command(2, 2, "m", [], {"SLURM_JOB_ID": "7", "TASKS": "2"})


def test_slurm_tasks_reads_the_job(monkeypatch):
    """The job step's environment has no SLURM_NTASKS (Snakemake clears it): scontrol has it."""

    class Shown:
        stdout = "JobId=7 JobName=x NumNodes=1 NumCPUs=2 NumTasks=2 CPUs/Task=1 ReqB:S:C:T=0"

    monkeypatch.setattr(launch.subprocess, "run", lambda *a, **k: Shown())
    assert launch.slurm_tasks({"SLURM_JOB_ID": "7"}) == 2


def test_parallel_config_checks():
    base = {
        "ensemble": {"seeds": [0], "batch_size": 64},
        "students": {"batch_size": 64, "methods": {}},
    }
    check_parallel({**base, "resources": {"processes": 8, "gpu": 8, "nodes": 2}})
    with pytest.raises(ConfigError, match="one process per GPU"):
        check_parallel({**base, "resources": {"processes": 1, "gpu": 8}})
    with pytest.raises(ConfigError, match="at least 2 per node"):
        check_parallel({**base, "resources": {"processes": 1, "nodes": 2}})
    small = {**base, "students": {"batch_size": 3, "methods": {}}}
    with pytest.raises(ConfigError, match="students.batch_size.*at least the number of processes"):
        check_parallel({**small, "resources": {"processes": 2, "nodes": 2}})


def test_shard_refuses_a_batch_smaller_than_the_world(monkeypatch):
    monkeypatch.setattr(D, "_WORLD", D.World(rank=1, size=2))
    assert D.shard(torch.arange(5)).tolist() == [3, 4]
    with pytest.raises(ValueError, match="1 example.*across 2 processes"):
        D.shard(torch.arange(1))


def test_two_ranks_train_a_member_like_one(prepared, two_rank_member, tmp_path):
    one = tmp_path / "one/model.safetensors"
    train_member("image", prepared, SGD, 3, one, tmp_path / "one.pt", log=lambda s: None)
    assert _close(one, two_rank_member) < REL
    _same_metrics(_history(one), _history(two_rank_member))
    assert not (two_rank_member.parent.parent / "two.pt").exists()  # finished: no checkpoint


def test_killed_rank_resumes_to_the_same_weights(prepared, two_rank_member, tmp_path):
    args = _member_args(prepared, tmp_path / "k/model.safetensors")
    killed = _launch(2, "train", *args, env={D.KILL_AT_ENV: "1:2:3"})  # rank 1, epoch 2, step 3
    assert killed.returncode != 0
    assert "SIGKILL" in killed.stderr
    assert not (tmp_path / "k/model.safetensors").exists()
    assert torch.load(tmp_path / "k.pt", weights_only=True)["epoch"] == 1
    rerun = _launch(2, "train", *args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from" in rerun.stdout and "after epoch 1/3" in rerun.stdout
    a, b = load_file(str(two_rank_member)), load_file(str(tmp_path / "k/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the ranks' sums are deterministic


def test_two_ranks_distil_pd_end2_like_one(prepared, members, cache, tmp_path):
    cfg = {**SGD, **PD, "epochs": 2}
    one = tmp_path / "one/model.safetensors"
    distill("image", prepared, cache, members, cfg, 0, one, tmp_path / "one.pt", log=lambda s: None)
    two = tmp_path / "two/model.safetensors"
    _distil_two_ranks("image", prepared, cache, members, cfg, two)
    assert _close(one, two) < REL
    _same_metrics(_history(one), _history(two))
    # the evaluation of that student, split over 2 ranks, writes the same files as 1 rank
    outs = _as_one_and_two_ranks("evaluate", tmp_path / "eval", "--task", "image", "--system",
                                 "pd_end2-seed0", "--data", prepared, "--teacher", cache,
                                 "--model", two)  # fmt: skip
    for name in ("metrics.csv", "per_example.safetensors"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_two_rank_teacher_cache_is_byte_identical(prepared, members, tmp_path):
    cfg = json.dumps({"dtype": "float16", "store_train_members": True, "batch_size": 64})
    outs = _as_one_and_two_ranks("teacher", tmp_path / "teacher", "--task", "image", "--data",
                                 prepared, "--members", *members, "--seeds", 0, 1, 2,
                                 "--config-json", cfg)  # fmt: skip
    names = sorted(f.name for f in outs[0].iterdir())
    assert names == sorted(f.name for f in outs[1].iterdir()) and "train.safetensors" in names
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_two_ranks_distil_a_token_student_like_one(tmp_path):
    """The token task: loss rows are target tokens, which differ between the ranks' shares of a
    batch; the weighting makes the update the global token mean's. The learning curve, recorded
    by rank 0 alone, is the 1-rank curve."""
    from pipeline.tasks.text import teacher as TT
    from tests.conftest import TEXT_CFG, fake_corpus

    data = fake_corpus(tmp_path / "data")
    members = []
    for seed in (0, 1):
        p = tmp_path / f"m{seed}/model.safetensors"
        train_member("text", data, TEXT_CFG, seed, p, tmp_path / f"m{seed}.pt", 20, log=print)
        members.append(p)
    TT.build_teacher(data, 20, members, tmp_path / "teacher")
    cfg = {**TEXT_CFG, **PD, "optimizer": "sgd", "lr": 0.2, "curve_every": 3, "val_size": 12}
    one = tmp_path / "one/model.safetensors"
    distill("text", data, tmp_path / "teacher", members, cfg, 0, one, tmp_path / "one.pt", 20)
    two = tmp_path / "two/model.safetensors"
    _distil_two_ranks("text", data, tmp_path / "teacher", members, cfg, two, "--num-classes", 20)
    assert _close(one, two) < REL
    _same_metrics(_history(one), _history(two))
    c1, c2 = (p.with_name("curve.csv").read_text().splitlines() for p in (one, two))
    assert len(c1) == len(c2) > 3
    for r1, r2 in zip(c1[1:], c2[1:], strict=True):
        assert [f"{float(v):.4g}" for v in r1.split(",")] == [
            f"{float(v):.4g}" for v in r2.split(",")
        ]
