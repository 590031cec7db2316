"""The students' training targets from the ensemble's own translations (``students.targets:
ensemble``; the paper's WMT17 setup, ``docs/method.md``: the students learn token-level from the
members teacher-forced on the ensemble's beam-search translations of the training set, not on
the references).

Rules ``translate_shard`` and ``ensemble_translations`` (stage ``translate_train``) write, per
target vocabulary V, ``<run>/ensemble_translations/``:

* ``shard<i>.safetensors`` (one job each, ``ensemble_translations.shards`` of them, so a large
  training set decodes as many independent jobs): ``rows [n_i]`` (indices into the train split)
  and the hypotheses ``hyp.tokens``/``hyp.offsets`` (EOS last, :func:`pipeline.io.ragged`);
* ``train.safetensors`` (the shards merged, ``rows`` ascending) and ``manifest.json`` (the
  train split's and the members' sha256, the decoding settings, the code fingerprint).

A student whose ``train_pairs`` subset is not inside the decoded rows, or whose V or train split
is not the manifest's, stops with an :class:`pipeline.io.ArtifactError` naming the folder (the
workflow reruns the translations when the members change: they are its inputs).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pipeline import __version__
from pipeline.imports import code_fingerprint
from pipeline.io import (
    ArtifactError,
    atomic_save,
    atomic_write_text,
    ragged,
    read_json,
    read_tensors,
    sha256_file,
)
from pipeline.tasks.translation import data as TD
from pipeline.tasks.translation.batches import keep_rows
from pipeline.tasks.translation.model import load_members
from pipeline.tasks.translation.systems import decode

__all__ = ["decoded_rows", "load_targets", "merge", "translate_shard"]

RULE = "ensemble_translations"


def decoded_rows(n: int, train_pairs: list[int | None]) -> np.ndarray:
    """``[m]`` the train rows to decode: the union of every reader's fixed subset
    (:func:`.batches.keep_rows` of each ``train_pairs``; ``None`` = all ``n``). The subsets are
    prefixes of one seeded permutation, so the largest covers the rest."""
    subsets = [keep_rows(n, p) for p in train_pairs]
    if any(s is None for s in subsets) or not subsets:
        return np.arange(n)
    return max(subsets, key=len).numpy()


def translate_shard(
    data_dir, member_files, vocab: int, rows: np.ndarray, cfg: dict, device, log=print
) -> dict[str, torch.Tensor]:
    """The ensemble's beam-search translations of the train sources ``rows``: ``rows`` and
    ``hyp.tokens``/``hyp.offsets``. ``cfg``: the decoding settings (``beam``, ``alpha``,
    ``batch``), as the teacher decodes."""
    members = load_members(member_files, vocab, device)
    src = TD.load_split(data_dir, "train", vocab)["src"]
    hyps = decode(members, [src[int(r)] for r in rows], cfg, device, ", ensemble, train")
    log(f"{len(rows)} train sources translated by the {len(members)}-member ensemble")
    return {
        "rows": torch.as_tensor(np.asarray(rows, dtype=np.int64)),
        **{f"hyp.{k}": v for k, v in ragged([h.tolist() for h in hyps]).items()},
    }


def merge(shard_files, want: np.ndarray, data_dir, member_files, vocab, cfg, out) -> dict:
    """Merge the shards into ``out/train.safetensors`` and write ``out/manifest.json``; the
    shards must hold exactly the rows ``want``, each once."""
    out = Path(out)
    rows, hyps = [], []
    for f in shard_files:
        t = read_tensors(f, rule="translate_shard")
        rows += t["rows"].tolist()
        hyps += TD.ragged_rows(t, "hyp", f, "translate_shard")
    if sorted(rows) != sorted(int(r) for r in want) or len(set(rows)) != len(rows):
        raise ArtifactError(out, f"its shards hold {len(rows)} rows, not the {len(want)} wanted")
    order = np.argsort(rows, kind="stable")
    tensors = {
        "rows": torch.tensor([rows[i] for i in order], dtype=torch.int64),
        **{f"hyp.{k}": v for k, v in ragged([hyps[i].tolist() for i in order]).items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_save(tensors, out / "train.safetensors")
    info = {
        "task": "translation",
        "pipeline_version": __version__,
        "code_sha256": code_fingerprint("translate_train", "translation"),
        "vocab": int(vocab),
        "decoding": {k: cfg[k] for k in ("beam", "alpha") if k in cfg},
        "train_sha256": TD.load_manifest(data_dir)["splits"]["train"]["sha256"],
        "member_sha256": [sha256_file(p) for p in member_files],
        "rows": len(rows),
        "target_tokens": int(tensors["hyp.offsets"][-1]),
        "sha256": sha256_file(out / "train.safetensors"),
    }
    atomic_write_text(json.dumps(info, indent=2), out / "manifest.json")
    return info


def load_targets(translations, data_dir, vocab: int, rows) -> tuple[list[torch.Tensor], str]:
    """The ensemble's translations ``[T_i]`` of the train rows ``rows`` (the reader's subset,
    indices into the train split), checked against the manifest (the same V and train split,
    every row decoded), and the sha256 of the file they come from."""
    translations = Path(translations)
    info = read_json(translations / "manifest.json", RULE)
    train_sha = TD.load_manifest(data_dir)["splits"]["train"]["sha256"]
    if int(info.get("vocab", -1)) != vocab or info.get("train_sha256") != train_sha:
        raise ArtifactError(
            translations, f"holds translations of another train split or V (not V={vocab})", RULE
        )
    t = read_tensors(translations / "train.safetensors", sha256=info["sha256"], rule=RULE)
    where = {int(r): i for i, r in enumerate(t["rows"].tolist())}
    missing = [int(r) for r in rows if int(r) not in where]
    if missing:
        raise ArtifactError(
            translations, f"lacks {len(missing)} of the student's train rows (first {missing[0]})"
        )
    hyps = TD.ragged_rows(t, "hyp", translations / "train.safetensors", RULE)
    return [hyps[where[int(r)]] for r in rows], info["sha256"]
