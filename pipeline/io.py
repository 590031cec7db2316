"""Safe, atomic artifact I/O: safetensors and JSON only, temp file + rename, checksums.

Every artifact the pipeline writes goes through here, so a reader never sees half a file and
nothing is unpickled (checkpoints use ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pipeline import __version__


def _tmp_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_save(tensors: dict[str, torch.Tensor], path: str | Path, metadata=None) -> None:
    """safetensors write to a temp file, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_for(path)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata
    )
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def atomic_write_text(text: str, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_for(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` of plain state (tensors, dicts, lists, numbers) to a temp file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_for(path)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(obj) -> str:
    """sha256 of the canonical JSON of ``obj`` (config slices, id lists...)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def save_model(model: torch.nn.Module, path: str | Path, meta: dict) -> None:
    """Weights as safetensors with ``meta`` (config slice, code version...) beside them as JSON
    and inside the safetensors metadata."""
    meta = {**meta, "code_version": __version__}
    atomic_save(model.state_dict(), path, metadata={"meta": json.dumps(meta, default=str)})
    atomic_write_text(json.dumps(meta, indent=2, default=str), Path(path).with_suffix(".json"))


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model weights {path} are missing")
    return load_file(str(path))


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def read_manifest(directory: str | Path, rule: str = "prepare_data") -> dict:
    """``<directory>/manifest.json``; a missing one names the rule that writes it."""
    path = Path(directory) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the {rule} rule first")
    return read_json(path)
