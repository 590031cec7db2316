"""pipeline.io: atomic, checksummed, pickle-free artifacts."""

import hashlib
import json

import pytest
import torch
from safetensors import safe_open

from pipeline import __version__
from pipeline.io import (
    ArtifactError,
    atomic_path,
    atomic_save,
    atomic_torch_save,
    atomic_write_text,
    fingerprint,
    load_state,
    read_json,
    read_manifest,
    read_tensors,
    save_model,
    sha256_file,
)


def test_atomic_writes_leave_only_the_file(tmp_path):
    atomic_save({"a": torch.arange(3)}, tmp_path / "sub" / "t.safetensors")
    atomic_write_text("hello", tmp_path / "sub" / "x.txt")
    atomic_torch_save({"epoch": 2}, tmp_path / "sub" / "c.pt")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == [
        "c.pt",
        "t.safetensors",
        "x.txt",
    ]
    assert (tmp_path / "sub" / "x.txt").read_text() == "hello"
    assert torch.load(tmp_path / "sub" / "c.pt", weights_only=True) == {"epoch": 2}


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "t.safetensors"
    atomic_save({"a": torch.zeros(2)}, path)
    before = path.read_bytes()
    with pytest.raises(AttributeError):
        atomic_save({"a": "not a tensor"}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_checksums_and_fingerprints(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert sha256_file(tmp_path / "f") == hashlib.sha256(b"abc").hexdigest()
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_model_weights_carry_their_metadata(tmp_path):
    model = torch.nn.Linear(2, 3)
    save_model(model, tmp_path / "m.safetensors", {"role": "member", "seed": 4})
    meta = read_json(tmp_path / "m.json")
    sha = meta.pop("weights_sha256")
    assert meta == {"role": "member", "seed": 4, "pipeline_version": __version__}
    assert sha == sha256_file(tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["meta"]) == meta
    state = load_state(tmp_path / "m.safetensors")
    assert torch.equal(state["weight"], model.weight.detach())


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json: is missing"):
        load_state(tmp_path / "nope.safetensors")  # its metadata (with the checksum) is missing
    with pytest.raises(FileNotFoundError, match="nope.json: is missing"):
        read_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="bad.json: is not valid JSON"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="rule prepare_data rebuilds it"):
        read_manifest(tmp_path)


def test_bit_flipped_or_truncated_weights_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(torch.nn.Linear(3, 2), path, {"seed": 0})
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # one bit of one weight: still a valid safetensors file
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="m.safetensors: does not match the sha256"):
        load_state(path, "train_member")
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ArtifactError, match="not a readable safetensors file"):
        read_tensors(path, rule="distill")
    with pytest.raises(ArtifactError, match="rule distill rebuilds it"):
        read_tensors(path, rule="distill")


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "figure.png"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == [path.name]
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new"
