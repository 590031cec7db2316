"""The paper-scale (ImageNet) path on a tiny generated ImageFolder tree: file-backed data,
class masks, the same Snakemake rules with a test override, and a dry-run of the full config."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from pipeline.tables import read_tidy
from pipeline.tasks.image import batches as B
from pipeline.tasks.image import cache as T
from pipeline.tasks.image import data as D
from pipeline.tasks.image import imagefolder as IF
from tests.tasks.image.imagefolder_fixture import CLASSES, make_tree

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("imagenet"))


def imagenet_cfg(tree, results) -> dict:
    cfg = yaml.safe_load((REPO / "config" / "imagenet.yaml").read_text())
    cfg.update(
        results=str(results),
        device="cpu",
        threads=1,
        resources={"mem_mb": 2000, "runtime": 10, "gpu": 0},
        gradient_analysis={"ks": [10, 100], "batch": 2, "profile_k": 100},
    )
    cfg["dataset"].update(
        train_dir=str(tree["train"]), val_dir=str(tree["val"]), image_size=32, resize=36, val_size=6
    )
    cfg["ood"]["folders"] = {
        "imagenet_c": {"dir": str(tree["c"]), "kind": "corruptions"},
        "imagenet_a": {"dir": str(tree["imagenet-a"]), "kind": "shift"},
        "imagenet_o": {"dir": str(tree["imagenet-o"]), "kind": "ood"},
    }
    small = {
        "model": {"name": "small_cnn", "width": 4, "normalize": "imagenet"},
        "epochs": 2,
        "batch_size": 8,
        "optimizer": "adamw",
        "lr": 0.01,
        "schedule": "cosine",
        "milestones": [],
        "workers": 2,
        "amp": False,
    }
    for part in ("ensemble", "students"):  # adamw here: the SGD-only keys would be refused
        for key in ("momentum", "nesterov", "no_weight_decay"):  # (the last: ResNet names)
            cfg[part].pop(key, None)
    cfg["ensemble"].update(seeds=[0, 1], **small)
    cfg["students"].update(seeds=[0], **small)
    cfg["teacher"].update(shard_size=7, batch_size=5)
    return cfg


def test_prepare_file_lists_masks_and_transforms(tree, tmp_path):
    cfg = imagenet_cfg(tree, tmp_path / "r")
    m = D.prepare({"dataset": cfg["dataset"], "ood": cfg["ood"]}, tmp_path / "data")
    assert m["storage"] == "files" and m["class_names"] == CLASSES and m["num_classes"] == 3
    assert set(m["splits"]) == {
        "train",
        "val",
        "test",
        "shift",
        "shift_imagenet_a",
        "ood_imagenet_o",
    }
    assert m["splits"]["train"]["n"] == 24 - 6 and m["splits"]["val"]["n"] == 6
    assert m["splits"]["shift_imagenet_a"]["class_mask"] == [0, 1]
    assert m["splits"]["test"]["class_mask"] is None
    assert m["corruptions"] == ["contrast", "gaussian_noise"]
    d = D.load_split(tmp_path / "data", "shift")
    assert set(d["severity"].tolist()) == {1, 5} and len(d["labels"]) == 2 * 2 * 3 * 2
    images = D.load_split(tmp_path / "data", "train")["images"]
    assert images.shape == (18, 3, 32, 32) and images.ndim == 4
    x = images[torch.tensor([0, 3])]
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.uint8
    a, b = images.load(1, train=True, seed=5), images.load(1, train=True, seed=5)
    assert torch.equal(a, b) and a.shape == (3, 32, 32)
    assert not torch.equal(a, images.load(1, train=True, seed=6))
    batches = [torch.tensor([0, 1, 2]), torch.tensor([3, 4])]
    got = list(B.iterate_batches(images, batches, workers=2))
    assert [g[0].tolist() for g in got] == [[0, 1, 2], [3, 4]]
    assert torch.equal(got[0][1], images[torch.tensor([0, 1, 2])])
    with pytest.raises(ValueError, match="not training classes"):
        IF.scan(tree["train"], CLASSES[:2])


@pytest.fixture(scope="module")
def tiny_run(tree, tmp_path_factory):
    """The full rules on the tiny tree with config/imagenet.yaml's settings (augmenting
    students, so an online teacher); returns the config and its results folder."""
    tmp_path = tmp_path_factory.mktemp("tiny_run")
    cfg = imagenet_cfg(tree, tmp_path / "results")
    cfgfile = tmp_path / "imagenet-tiny.yaml"
    cfgfile.write_text(yaml.safe_dump(cfg))
    r = subprocess.run(
        ["snakemake", "--cores", "2", "--configfile", str(cfgfile)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return cfg, tmp_path / "results"


def test_same_rules_run_on_the_tiny_tree(tiny_run):
    cfg, res = tiny_run
    manifest = T.validate(res / "teacher", res / "data")
    # the students augment, so the teacher runs online: no train split is cached
    assert manifest["config"]["mode"] == "online" and "train" not in manifest["splits"]
    test = manifest["splits"]["test"]
    assert len(test["files"]) == -(-test["n"] // 7)  # shards of 7 images
    assert manifest["splits"]["val"]["n"] == 6
    student = json.loads((res / "students/pd_end2/seed0/model.json").read_text())
    assert student["config"]["teacher_mode"] == "online"
    tidy = read_tidy(res / "tables" / "metrics_tidy.csv")
    defined = tidy[tidy["metric"] != "prr"]  # PRR is undefined (NaN) for an error-free system
    assert np.isfinite(defined["value"]).all()
    a = tidy[(tidy["split"] == "shift_imagenet_a") & (tidy["metric"] == "accuracy")]
    assert len(a) == len(set(tidy["system"])) and a["value"].between(0, 1).all()
    o = tidy[(tidy["split"] == "ood_imagenet_o") & (tidy["metric"] == "ood_auroc")]
    assert len(o) == 6 * len(set(tidy["system"]))
    assert "imagenet_a Acc" in pd.read_csv(res / "tables" / "shift_sets.csv", index_col=0)


def test_online_teacher_runs_data_parallel_on_the_tiny_tree(tiny_run, tmp_path):
    """The online-teacher student on file-backed, augmented images as 2 CPU ranks (each runs
    the members on its share of the global batch) trains the 1-rank student's weights."""
    cfg, res = tiny_run
    members = sorted(res.glob("members/seed*/model.safetensors"))
    student = {**cfg["students"], "device": "cpu", "teacher_mode": "online", "method": "pd_end2",
               "options": cfg["students"]["methods"]["pd_end2"], "epochs": 2}  # fmt: skip
    student.pop("methods"), student.pop("seeds")
    outs = []
    for ranks in (1, 2):
        out = tmp_path / f"r{ranks}/model.safetensors"
        cmd = [sys.executable, "-m", "pipeline.launch", "--processes", str(ranks), "--",
               "pipeline.stages.distill", "--task", "image", "--data", str(res / "data"),
               "--teacher", str(res / "teacher"), "--members", *map(str, members), "--seed", "0",
               "--config-json", json.dumps(student), "--out", str(out), "--ckpt",
               str(tmp_path / f"r{ranks}.pt"), "--device", "cpu", "--threads", "1"]  # fmt: skip
        run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        outs.append(out)
    one, two = (load_file(str(o)) for o in outs)
    for k in one:
        scale = one[k].double().abs().max().clamp(min=1e-12)
        assert float((one[k].double() - two[k].double()).abs().max() / scale) < 1e-4, k


def test_full_imagenet_config_dry_runs():
    r = subprocess.run(
        ["snakemake", "-n", "-p", "--configfile", "config/imagenet.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    counts = dict(re_counts(out))
    assert counts["train_member"] == 10 and counts["distill"] == 5 and counts["evaluate"] == 16
    groups = {"end", "end2", "end2_orig", "pd_end2", "pd_fkl"}  # EnD2 both ways, PD both KLs
    assert all(f"students/{g}/seed0/model.safetensors" in out for g in groups)
    assert "teacher/train.safetensors" not in out  # the online teacher: no train split cached
    assert "pipeline.launch --processes 8" in out  # 8-GPU data-parallel jobs
    assert "shift_imagenet_a.safetensors" in out and "ood_imagenet_o.safetensors" in out


def re_counts(output: str):
    import re

    table = output.split("Job stats:")[-1]
    return ((m[1], int(m[2])) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M))
