"""Shared test settings: deterministic hypothesis in CI, one torch thread pool, loss backends."""

import json
import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from pipeline.io import atomic_save, sha256_file

settings.register_profile(
    "default",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "ci", parent=settings.get_profile("default"), derandomize=True, database=None, print_blob=True
)
settings.load_profile("ci" if os.environ.get("CI") else "default")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(params=["eager", "compiled"])
def backend(request, monkeypatch):
    """Run a test under each loss backend (see pipeline.maths.losses.loss_backend)."""
    monkeypatch.setenv("PROXY_END2_LOSS_BACKEND", request.param)
    return request.param


@pytest.fixture
def eager(monkeypatch):
    monkeypatch.setenv("PROXY_END2_LOSS_BACKEND", "eager")


# ----------------------------------------------------------------- a tiny pipeline, built once
def _class_images(n: int, seed: int):
    """Learnable 28x28 uint8 images: an 8x8 patch of intensity 70 + 18c (class c) at a random
    place on dim noise (the small CNN pools globally, so the class must not be its position)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 40, (n, 28, 28))
    for i, c in enumerate(labels):
        r, col = rng.integers(0, 20, 2)
        images[i, r : r + 8, col : col + 8] = 70 + 18 * c + rng.integers(0, 8, (8, 8))
    return images.clip(0, 255).astype("uint8"), labels.astype("uint8")


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory):
    """Fashion-MNIST-named IDX .gz files with generated content."""
    from pipeline.tasks.image.data import write_idx

    d = tmp_path_factory.mktemp("idx")
    for prefix, n, seed in (("train", 700, 0), ("t10k", 200, 1)):
        images, labels = _class_images(n, seed)
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return d


@pytest.fixture(scope="session")
def data_cfg(idx_dir):
    return {
        "dataset": {
            "name": "fashion_mnist",
            "path": str(idx_dir),
            "train_size": 500,
            "val_size": 100,
            "test_size": 150,
            "split_seed": 0,
        },
        "ood": {
            "sets": ["mnist", "inverted"],
            "size": 100,
            "corruptions": ["gaussian_noise", "rotation"],
            "severities": [1, 5],
            "corruption_size": 60,
            "corruption_seed": 0,
        },
    }


@pytest.fixture(scope="session")
def prepared(data_cfg, tmp_path_factory):
    from pipeline.tasks.image.data import prepare

    out = tmp_path_factory.mktemp("data")
    prepare(data_cfg, out)
    return out


MEMBER_CFG = {
    "model": {"name": "small_cnn", "width": 8},
    "epochs": 8,
    "batch_size": 25,
    "lr": 0.02,
    "device": "cpu",
}


@pytest.fixture(scope="session")
def members(prepared, tmp_path_factory):
    from pipeline.stages.train import train_member

    d = tmp_path_factory.mktemp("members")
    paths = []
    for seed in (0, 1, 2):
        out = d / f"seed{seed}" / "model.safetensors"
        ckpt = d / f"ckpt{seed}.pt"
        train_member("image", prepared, MEMBER_CFG, seed, out, ckpt, log=lambda s: None)
        paths.append(out)
    return paths


@pytest.fixture(scope="session")
def cache(prepared, members, tmp_path_factory):
    from pipeline.tasks.image.cache import build_cache

    out = tmp_path_factory.mktemp("teacher")
    build_cache(
        prepared,
        members,
        [0, 1, 2],
        out,
        {"dtype": "float16", "store_train_members": True, "device": "cpu"},
        log=lambda s: None,
    )
    return out


@pytest.fixture(scope="session")
def evaluated(prepared, cache, members, tmp_path_factory):
    """A PD-EnD2 student, two members and the ensemble evaluated on the tiny image data."""
    from pipeline.stages.distill import distill
    from pipeline.stages.evaluate import evaluate

    d = tmp_path_factory.mktemp("eval")
    student = d / "student" / "model.safetensors"
    distill(
        "image",
        prepared,
        cache,
        members,
        {
            "method": "pd_end2",
            "options": {},
            "model": {"name": "small_cnn", "width": 8},
            "epochs": 6,
            "batch_size": 25,
            "lr": 0.02,
            "device": "cpu",
        },
        0,
        student,
        d / "c.pt",
        log=lambda s: None,
    )
    tables = {}
    for system, model in (
        ("member-0", None),
        ("member-1", None),
        ("ensemble", None),
        ("pd_end2-seed0", student),
    ):
        tables[system] = evaluate("image", system, prepared, cache, d / system, model)
    return d, tables


# ----------------------------------------------------------------- the token task, tiny
TEXT_CFG = {
    "model": {"name": "lstm", "dim": 8, "layers": 1, "dropout": 0.0},
    "epochs": 2,
    "batch_size": 8,
    "lr": 0.01,
    "device": "cpu",
}


def fake_corpus(path, n=60, vocab_words=40, seed=0):
    """A prepared-corpus directory (manifest + splits) of random sequences."""
    g = torch.Generator().manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, count in (("train", n), ("val", 12), ("test", 12)):
        lengths = torch.randint(2, 9, (count,), generator=g)
        tokens = torch.randint(2, vocab_words, (int(lengths.sum()),), generator=g).int()
        ends = torch.cumsum(lengths, 0)
        tokens[ends - 1] = 1  # EOS
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), ends])
        atomic_save({"tokens": tokens, "offsets": offsets}, path / f"{split}.safetensors")
        sha = sha256_file(path / f"{split}.safetensors")
        splits[split] = {"n": count, "tokens": int(lengths.sum()), "sha256": sha}
    manifest = {"task": "text", "num_words": vocab_words - 2, "splits": splits}  # ids 2..: words
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path
