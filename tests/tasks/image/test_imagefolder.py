"""The paper-scale (ImageNet) path on a tiny generated ImageFolder tree: file-backed data,
class masks, the same Snakemake rules with a test override, and a dry-run of the full config."""

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

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
        for key in ("momentum", "nesterov"):
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


def test_same_rules_run_on_the_tiny_tree(tree, tmp_path):
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
    res = tmp_path / "results"
    manifest = T.validate(res / "teacher", res / "data")
    assert len(manifest["splits"]["train"]["files"]) == 3  # 18 images in shards of 7
    t = T.load_split(res / "teacher", "train")
    assert t["mean_probs"].shape == (18, 3)
    tidy = read_tidy(res / "tables" / "metrics_tidy.csv")
    defined = tidy[tidy["metric"] != "prr"]  # PRR is undefined (NaN) for an error-free system
    assert np.isfinite(defined["value"]).all()
    a = tidy[(tidy["split"] == "shift_imagenet_a") & (tidy["metric"] == "accuracy")]
    assert len(a) == len(set(tidy["system"])) and a["value"].between(0, 1).all()
    o = tidy[(tidy["split"] == "ood_imagenet_o") & (tidy["metric"] == "ood_auroc")]
    assert len(o) == 6 * len(set(tidy["system"]))
    assert "imagenet_a Acc" in pd.read_csv(res / "tables" / "shift_sets.csv", index_col=0)


def test_full_imagenet_config_dry_runs():
    r = subprocess.run(
        ["snakemake", "-n", "--configfile", "config/imagenet.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    counts = dict(re_counts(out))
    assert counts["train_member"] == 10 and counts["distill"] == 2 and counts["evaluate"] == 13
    assert "shift_imagenet_a.safetensors" in out and "ood_imagenet_o.safetensors" in out


def re_counts(output: str):
    import re

    table = output.split("Job stats:")[-1]
    return ((m[1], int(m[2])) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M))
