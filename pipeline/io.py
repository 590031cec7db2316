"""Safe, atomic, verified artifact I/O: safetensors and JSON only, temp file + rename, checksums.

Every artifact the pipeline writes goes through here, so a reader never sees half a file and
nothing is unpickled (checkpoints use ``torch.load(weights_only=True)``). Every artifact the
pipeline reads goes through here too: :func:`read_tensors`, :func:`read_json` and
:func:`load_state` are the one verification layer. A missing, truncated, bit-flipped or foreign
file raises :class:`ArtifactError`, which names the file, what is wrong and the rule that
rebuilds it, instead of a traceback from inside safetensors or torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pipeline import __version__


class ArtifactError(ValueError):
    """An input artifact that cannot be used: the message names the file, the problem and how to
    rebuild it (``rule``: the Snakemake rule that writes it)."""

    def __init__(self, path, problem: str = "is unusable", rule: str | None = None):
        self.path, self.problem, self.rule = Path(path), problem, rule
        fix = (
            f"; rule {rule} rebuilds it: delete it and rerun snakemake (or "
            f"`snakemake --forcerun {rule} ...`)"
            if rule
            else ""
        )
        super().__init__(f"{path}: {problem}{fix}")


class MissingArtifact(ArtifactError, FileNotFoundError):
    """An input artifact that is not there."""


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Around a stage's work: an :class:`ArtifactError` or a
    :class:`pipeline.errors.ConfigError` ends the process with its message on stderr and exit
    status 2 (no traceback: the message says what to do)."""
    from pipeline.errors import ConfigError

    try:
        yield
    except (ArtifactError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


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


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp path beside ``path`` to write to; renamed onto ``path`` if the block succeeds and
    removed if it fails, so ``path`` is either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    """Weights as safetensors with ``meta`` (config slice, seed, ``code_sha256``...) inside the
    safetensors metadata and beside them as JSON, where ``weights_sha256`` (the checksum of the
    weights file) is added: :func:`load_state` checks it."""
    meta = {**meta, "pipeline_version": __version__}
    atomic_save(model.state_dict(), path, metadata={"meta": json.dumps(meta, default=str)})
    meta["weights_sha256"] = sha256_file(path)
    atomic_write_text(json.dumps(meta, indent=2, default=str), Path(path).with_suffix(".json"))


def _exists(path: Path, rule: str | None) -> None:
    if not path.is_file():
        raise MissingArtifact(path, "is missing", rule)


def read_tensors(
    path: str | Path, *, sha256: str | None = None, rule: str | None = None
) -> dict[str, torch.Tensor]:
    """A safetensors file, checked against ``sha256`` (its recorded checksum) when given."""
    path = Path(path)
    _exists(path, rule)
    if sha256 is not None and sha256_file(path) != sha256:
        raise ArtifactError(
            path, "does not match the sha256 recorded for it (changed or corrupt)", rule
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtifactError(path, f"is not a readable safetensors file ({err})", rule) from err


def _checked_weights(path: Path, meta: dict, rule: str | None) -> dict[str, torch.Tensor]:
    if "weights_sha256" not in meta:
        raise ArtifactError(path.with_suffix(".json"), "records no weights_sha256", rule)
    return read_tensors(path, sha256=meta["weights_sha256"], rule=rule)


def load_state(path: str | Path, rule: str | None = None) -> dict[str, torch.Tensor]:
    """The weights saved by :func:`save_model`, checked against the ``weights_sha256`` of the
    JSON beside them."""
    path = Path(path)
    return _checked_weights(path, read_json(path.with_suffix(".json"), rule), rule)


ROLE_STAGES = {"member": ("train", "train_member"), "student": ("distill", "distill")}


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """A trained member or student (``save_model``) and its metadata, verified: the weights
    match their recorded checksum, and a model saved by a training stage (``meta["role"]``) was
    trained by the code that stage runs now (``meta["code_sha256"]`` against
    :func:`pipeline.imports.code_fingerprint`), so a model left over from other code (copied
    in, or marked up to date by ``snakemake --touch``) is never used as if current."""
    from pipeline.imports import code_fingerprint

    path = Path(path)
    meta = read_json(path.with_suffix(".json"), "train_member or distill")
    stage, rule = ROLE_STAGES.get(meta.get("role"), (None, None))
    state = _checked_weights(path, meta, rule)
    if stage is not None:
        now = code_fingerprint(stage, meta.get("task", "image"))
        if meta.get("code_sha256") != now:
            raise ArtifactError(
                path,
                f"was trained by other code than the current pipeline.stages.{stage} "
                f"(code_sha256 {str(meta.get('code_sha256'))[:12]} != {now[:12]})",
                rule,
            )
    return state, meta


def read_json(path: str | Path, rule: str | None = None) -> dict:
    path = Path(path)
    _exists(path, rule)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(path, f"is not valid JSON ({err})", rule) from err


def read_manifest(
    directory: str | Path, rule: str = "prepare_data", task: str | None = None, what: str = ""
) -> dict:
    """``<directory>/manifest.json``; a missing or broken one names the rule that writes it, and
    so does one of another ``task`` than asked for (``what`` the prepared data is called)."""
    path = Path(directory) / "manifest.json"
    manifest = read_json(path, rule)
    if task is not None and manifest.get("task") != task:
        raise ArtifactError(
            path, f"is not {what or f'prepared {task} data'} (task={manifest.get('task')!r})", rule
        )
    return manifest


def ragged(rows: list[list[int]]) -> dict[str, torch.Tensor]:
    """Id sequences as ``tokens`` (int32, flat) and ``offsets`` (int64 ``[n + 1]``: sequence
    ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``), the prepared splits' storage."""
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    flat = [i for r in rows for i in r]
    return {"tokens": torch.tensor(flat, dtype=torch.int32), "offsets": torch.from_numpy(offsets)}


def ragged_lengths(
    tokens: torch.Tensor, offsets: torch.Tensor, path: str | Path, rule: str, what: str = ""
) -> torch.Tensor:
    """The sequence lengths ``[n]`` of a :func:`ragged` pair read from ``path``; offsets that
    do not index the tokens are an :class:`ArtifactError` (``what``: which pair, if several)."""
    if offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != tokens.numel():
        raise ArtifactError(path, f"{what}offsets do not index the token array", rule)
    return offsets[1:] - offsets[:-1]
