"""The translation task's parallel corpus (``rule prepare_data``): the Reina-Valera 1909 Bible
(Spanish, the source) and the King James Bible (English, the target), aligned verse by verse.

Why the KJV: it is installed already (``sword-text-kjv``), and, like the Reina-Valera 1909 (a
revision of the 1602 translation), it is early-modern and formulaic ("thee", "hath"; "JEHOVÁ" /
"LORD"), so the two sides match in register; a modern English target (the World English Bible)
would add a style shift the members must learn on top of the translation.

Alignment is by verse reference ``(OSIS book, chapter, verse)``; a verse missing or empty on
either side is dropped and counted (``manifest["dropped"]``). Cleaning: the KJV's paragraph marks
``¶`` and the brackets of its supplied words (``[but]`` -> ``but``) go; the Reina-Valera's drop
capitals at a chapter's first verse (``EN el principio``) are written as ordinary words.

Splits (``dataset``): ``shift`` holds whole books training never sees (``shift_books``, default
the Song of Songs and Revelation: poetry and apocalyptic, unlike the narrative bulk); ``valid``
and ``test`` are ``valid_size`` and ``test_size`` verses drawn (``split_seed``) from the other
books, ``train`` the rest (``train_size``: a fixed random subset). Training pairs longer than
``max_words`` whitespace words on either side are dropped and counted. OOD sets (``ood.sets``):
``permuted`` (the test sources with their words shuffled) and ``austen`` (English sentences of
Jane Austen's novels fed as the source).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipeline.corpora import austen_chapters, bible_text, paragraphs
from pipeline.errors import ConfigError

__all__ = [
    "OOD_SETS",
    "SHIFT_BOOKS",
    "align",
    "austen_sources",
    "clean_source",
    "clean_target",
    "permute_words",
    "split_pairs",
]

SHIFT_BOOKS = ("Song", "Rev")
"""The default shift set: whole books no split but ``shift`` holds."""
OOD_SETS = ("permuted", "austen")

_BRACKETS = re.compile(r"\[([^\]]*)\]")
_SPACES = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")

Ref = tuple[str, int, int]


def clean_target(text: str) -> str:
    """A KJV verse without ``¶`` and with its supplied words' brackets dropped."""
    return _SPACES.sub(" ", _BRACKETS.sub(r"\1", text.replace("¶", " "))).strip()


def clean_source(text: str, first_verse: bool) -> str:
    """A Reina-Valera verse; at a chapter's first verse, a drop capital (``EN``) as a word."""
    text = _SPACES.sub(" ", text).strip()
    if first_verse and text:
        word, _, rest = text.partition(" ")
        letters = "".join(ch for ch in word if ch.isalpha())
        if len(letters) > 1 and letters.isupper():
            text = (word[0] + word[1:].lower() + (" " + rest if rest else "")).strip()
    return text


def align(source: dict[Ref, str], target: dict[Ref, str]) -> tuple[list, dict[str, int]]:
    """``([(ref, source, target)], dropped)``: the verses present and non-empty on both sides,
    cleaned, in the source's order; ``dropped`` counts the others by reason."""
    pairs, dropped = [], {"missing": 0, "empty_source": 0, "empty_target": 0}
    for ref in dict.fromkeys([*source, *target]):
        if ref not in source or ref not in target:
            dropped["missing"] += 1
            continue
        s, t = clean_source(source[ref], ref[2] == 1), clean_target(target[ref])
        if not s or not t:
            dropped["empty_source" if not s else "empty_target"] += 1
            continue
        pairs.append((ref, s, t))
    return pairs, dropped


def split_pairs(pairs: list, ds: dict) -> tuple[dict[str, list], dict[str, int]]:
    """``({split: pairs}, dropped)``: ``shift`` the shift books, ``valid`` / ``test`` drawn from
    the rest, ``train`` what remains (long pairs dropped, optionally subsampled)."""
    shift_books = set(ds.get("shift_books", SHIFT_BOOKS))
    known = {ref[0] for ref, _, _ in pairs}
    unknown = sorted(shift_books - known)
    if unknown:
        raise ConfigError("dataset.shift_books", unknown, f"OSIS book names, e.g. {sorted(known)}")
    rng = np.random.default_rng(int(ds.get("split_seed", 0)))
    shift = [p for p in pairs if p[0][0] in shift_books]
    rest = [p for p in pairs if p[0][0] not in shift_books]
    order = rng.permutation(len(rest))
    n_valid, n_test = int(ds["valid_size"]), int(ds["test_size"])
    if n_valid + n_test >= len(rest):
        raise ConfigError(
            "dataset.test_size", n_test, f"valid + test below the {len(rest)} verses outside shift"
        )
    valid = [rest[i] for i in sorted(order[:n_valid])]
    test = [rest[i] for i in sorted(order[n_valid : n_valid + n_test])]
    train = [rest[i] for i in sorted(order[n_valid + n_test :])]
    max_words = int(ds.get("max_words", 80))
    long = [p for p in train if max(len(p[1].split()), len(p[2].split())) > max_words]
    train = [p for p in train if max(len(p[1].split()), len(p[2].split())) <= max_words]
    size = ds.get("train_size")
    if size is not None and int(size) < len(train):
        keep = np.sort(rng.choice(len(train), size=int(size), replace=False))
        train = [train[i] for i in keep]
    splits = {"train": train, "valid": valid, "test": test, "shift": shift}
    return splits, {"long_train": len(long)}


def permute_words(sentences: list[str], rng: np.random.Generator) -> list[str]:
    """Each sentence with its whitespace words in a random order (``rng``)."""
    out = []
    for s in sentences:
        words = s.split()
        out.append(" ".join(words[i] for i in rng.permutation(len(words))))
    return out


def austen_sources(root: str | Path, size: int, rng: np.random.Generator) -> list[str]:
    """``size`` English sentences of Jane Austen's novels (3 to 60 words), drawn with ``rng``."""
    sentences = []
    for _, _, lines in austen_chapters(root):
        for para in paragraphs(lines):
            sentences += [s.replace("_", "") for s in _SENTENCE_END.split(para)]
    sentences = [s for s in sentences if 3 <= len(s.split()) <= 60]
    keep = np.sort(rng.choice(len(sentences), size=min(size, len(sentences)), replace=False))
    return [sentences[i] for i in keep]


def read_bibles(root: str | Path) -> tuple[dict[Ref, str], dict[Ref, str]]:
    """The raw Reina-Valera and KJV verses by reference."""
    return bible_text(root, "spanish"), bible_text(root, "kjv")
