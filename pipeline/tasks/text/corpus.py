"""The token task's corpus (``rule prepare_data``): Jane Austen's six novels as sentences of word
tokens, split by chapter, plus the OOD sets (the same test sentences with their tokens permuted,
King James Bible verses, Reina-Valera 1909 Spanish Bible verses).

Sources: the Debian-packaged corpora read by :mod:`pipeline.corpora` (the Austen R database,
the SWORD Bibles).

Tokenisation (deterministic, no learned pieces): lower case, Gutenberg italics markers ``_``
dropped, tokens are words (unicode letters, inner apostrophes kept: ``don't``), numbers, a few
abbreviations with their period (``mr.``), and single punctuation marks. A sentence ends after
``.``, ``!`` or ``?`` (and the closing quotes that follow); paragraphs never share a sentence.

Chapters are dealt round-robin: chapter ``c`` (counted over the novels in a fixed order) goes to
``val`` when ``c % 10 == val_mod``, ``test`` when ``c % 10 == test_mod``, else ``train``.

Stored ids rank words by their train-split frequency: ``0`` is UNK, ``1`` EOS (end of
sentence), ``2..`` words, most frequent first; words never seen in train are UNK. A vocabulary
of ``V`` classes is then simply ``id if id < V else UNK`` (:func:`load_sequences`), so every
sweep point reads the same prepared files.

Files (``out/``): ``{split}.safetensors`` with ``tokens`` (int32, flat) and ``offsets``
(int64 ``[n + 1]``, sequence ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``, EOS included
unless truncated at ``max_len``), ``vocab.json`` (words by rank) and ``manifest.json``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from pipeline import __version__
from pipeline.corpora import (
    BIBLES,
    austen_chapters,
    bible_verses,
    paragraphs,
)
from pipeline.errors import ConfigError
from pipeline.imports import code_fingerprint
from pipeline.io import (
    ArtifactError,
    atomic_save,
    atomic_write_text,
    ragged,
    ragged_lengths,
    read_manifest,
    read_tensors,
    sha256_file,
)
from pipeline.tasks.text.splits import residues

UNK, EOS = 0, 1
SPECIALS = ("<unk>", "</s>")


_ABBREV = r"(?:mrs|mr|dr|st|esq|messrs|no)\."
_TOKEN = re.compile(rf"{_ABBREV}|[^\W\d_]+(?:'[^\W\d_]+)*|\d+|[^\w\s]", re.UNICODE)
_ENDS = {".", "!", "?"}
_CLOSERS = {'"', "'", ")"}


def tokenize(text: str) -> list[str]:
    """Lower-cased word / number / punctuation tokens of ``text`` (see the module docstring)."""
    return _TOKEN.findall(text.replace("_", " ").lower())


def sentences(tokens: list[str]) -> list[list[str]]:
    """Split a paragraph's tokens after ``. ! ?`` (keeping closing quotes with the sentence)."""
    out, cur = [], []
    i = 0
    while i < len(tokens):
        cur.append(tokens[i])
        if tokens[i] in _ENDS:
            while i + 1 < len(tokens) and (tokens[i + 1] in _CLOSERS or tokens[i + 1] in _ENDS):
                i += 1
                cur.append(tokens[i])
            out.append(cur)
            cur = []
        i += 1
    if cur:
        out.append(cur)
    return out


def _cut(words: list[str], max_len: int) -> tuple[list[str], bool]:
    """The words a sequence keeps (``max_len`` tokens with EOS) and whether EOS ends it."""
    return (words, True) if len(words) < max_len else (words[:max_len], False)


def _ids(seqs: list[list[str]], rank: dict[str, int], max_len: int) -> list[list[int]]:
    rows = []
    for s in seqs:
        words, eos = _cut(s, max_len)
        rows.append([rank.get(w, UNK) for w in words] + ([EOS] if eos else []))
    return rows


def _sample(seqs: list, size: int | None, rng: np.random.Generator) -> list:
    if size is None or size >= len(seqs):
        return seqs
    keep = np.sort(rng.choice(len(seqs), size=size, replace=False))
    return [seqs[i] for i in keep]


def permute_within(rows: list[list[int]], rng: np.random.Generator) -> list[list[int]]:
    """Each sequence's tokens in a random order, a final EOS left in place (the ``permuted``
    OOD set: the same tokens as the test sequences, without their order)."""
    out = []
    for r in rows:
        body, tail = (r[:-1], r[-1:]) if r and r[-1] == EOS else (r, [])
        out.append([body[i] for i in rng.permutation(len(body))] + tail)
    return out


def prepare(cfg: dict, out: str | Path) -> dict:
    """Tokenise, split and encode the corpus and OOD sets described by the ``dataset`` and
    ``ood`` config slices (``cfg = {"dataset": ..., "ood": ...}``); returns the manifest."""
    ds, ood = cfg["dataset"], cfg["ood"]
    out = Path(out)
    root = Path(ds["root"])
    max_len, min_len = int(ds.get("max_len", 48)), int(ds.get("min_len", 3))
    val_mod, test_mod = residues(ds)
    splits: dict[str, list[list[str]]] = {"train": [], "val": [], "test": []}
    for c, (_, _, lines) in enumerate(austen_chapters(root)):
        split = "val" if c % 10 == val_mod else "test" if c % 10 == test_mod else "train"
        for para in paragraphs(lines):
            splits[split].extend(s for s in sentences(tokenize(para)) if len(s) >= min_len)
    rng = np.random.default_rng(int(ds.get("split_seed", 0)))
    for split in ("train", "val", "test"):
        splits[split] = _sample(splits[split], ds.get(f"{split}_size"), rng)
    counts = Counter(w for s in splits["train"] for w in _cut(s, max_len)[0])  # words kept
    words = sorted(counts, key=lambda w: (-counts[w], w))  # ties broken alphabetically
    rank = {w: i + len(SPECIALS) for i, w in enumerate(words)}
    rows = {split: _ids(seqs, rank, max_len) for split, seqs in splits.items()}
    size = ood.get("size")
    orng = np.random.default_rng(int(ood.get("seed", 0)))
    for name in ood.get("sets", []):
        if name == "permuted":
            rows["ood_permuted"] = permute_within(_sample(rows["test"], size, orng), orng)
        elif name in BIBLES:
            verses = bible_verses(root, name, size, int(orng.integers(2**31)))
            rows[f"ood_{name}"] = _ids([tokenize(v) for v in verses], rank, max_len)
        else:
            raise ValueError(f"unknown text OOD set {name!r}; choose from permuted, {list(BIBLES)}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(list(SPECIALS) + words), out / "vocab.json")
    total = sum(counts.values())
    top = np.cumsum(sorted(counts.values(), reverse=True)) / max(total, 1)
    manifest = {
        "task": "text",
        "pipeline_version": __version__,
        "code_sha256": code_fingerprint("prepare", "text"),
        "config": cfg,
        "max_len": max_len,
        "num_words": len(words),
        "full_vocab_size": len(words) + len(SPECIALS),  # the V with no train word as UNK
        "train_word_tokens": total,
        "coverage": {
            str(v): float(top[min(v - len(SPECIALS), len(top)) - 1])
            for v in (100, 1000, 5000, 10000)
        },
        "splits": {},
    }
    for split, ids in rows.items():
        enc = ragged(ids)
        path = out / f"{split}.safetensors"
        atomic_save(enc, path)
        n_tok = int(enc["tokens"].numel())
        manifest["splits"][split] = {
            "n": len(ids),
            "tokens": n_tok,
            "unk_rate": float((enc["tokens"] == UNK).double().mean()) if n_tok else 0.0,
            "sha256": sha256_file(path),
        }
    atomic_write_text(json.dumps(manifest, indent=2), out / "manifest.json")
    return manifest


# ----------------------------------------------------------------------------- loading
def load_manifest(data_dir: str | Path) -> dict:
    return read_manifest(data_dir, task="text", what="a prepared text corpus")


def train_rows(total: int, n: int) -> torch.Tensor | None:
    """The train sequences a run with ``train_sentences: n`` uses out of ``total``: one fixed
    random subset (sorted indices, the same for every run and stage), or ``None`` for all of them
    (``n`` of 0 or at least ``total``)."""
    if not n or n >= total:
        return None
    keep = torch.randperm(total, generator=torch.Generator().manual_seed(0))
    return keep[:n].sort().values


def load_sequences(data_dir: str | Path, split: str, vocab_size: int) -> dict[str, torch.Tensor]:
    """Padded next-token batches of one split at ``vocab_size`` classes.

    Returns:
        ``inputs [N, L]`` int64: BOS (``= vocab_size``) then the sequence shifted right, padded
        with ``-1``; ``targets [N, L]`` int64: the sequence (ids ``>= vocab_size`` -> UNK),
        padded with ``-1``; ``lengths [N]``. ``L`` is the longest sequence of the split.
    """
    if vocab_size < 3:
        raise ValueError(f"vocab_size must be >= 3 (UNK, EOS and a word), got {vocab_size}")
    manifest = load_manifest(data_dir)
    most = len(SPECIALS) + int(manifest["num_words"])
    if vocab_size > most:
        raise ConfigError(
            "vocab_sizes",
            vocab_size,
            f"at most {most}: the prepared corpus has {manifest['num_words']} distinct words "
            f"(+ {len(SPECIALS)} specials)",
        )
    entry = manifest["splits"].get(split)
    path = Path(data_dir) / f"{split}.safetensors"
    if entry is None:
        raise ArtifactError(path, "is not a split of the prepared corpus", "prepare_data")
    t = read_tensors(path, sha256=entry["sha256"], rule="prepare_data")
    tokens, offsets = t["tokens"].long(), t["offsets"]
    lengths = ragged_lengths(tokens, offsets, path, "prepare_data")
    if bool((lengths < 1).any()):
        raise ArtifactError(path, "has an empty sequence", "prepare_data")
    n, width = len(lengths), int(lengths.max())
    tokens = torch.where(tokens < vocab_size, tokens, torch.full_like(tokens, UNK))
    pos = torch.arange(width)
    valid = pos[None, :] < lengths[:, None]
    targets = torch.full((n, width), -1, dtype=torch.int64)
    targets[valid] = tokens
    inputs = torch.full((n, width), -1, dtype=torch.int64)
    inputs[:, 0] = vocab_size
    inputs[:, 1:] = torch.where(valid[:, 1:], targets[:, :-1], torch.full_like(targets[:, 1:], -1))
    return {"inputs": inputs, "targets": targets, "lengths": lengths}
