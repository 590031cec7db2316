"""The real corpora that install offline (public domain, shipped by Debian; fetched by
``scripts/install.sh`` with ``apt-get download`` + ``dpkg-deb -x``, never ``apt-get install``,
into ``data/debian``), read the same way by every task that uses them:

* ``r-cran-janeaustenr``: an R lazy-load database ``data/Rdata.rdb`` (+ ``.rdx`` index), read
  with the PyPI package ``rdata``: one character vector of text lines per novel
  (:func:`austen_chapters`);
* ``sword-text-kjv`` / ``sword-text-sparv``: the SWORD modules ``engKJV2006eb`` (King James
  Bible) / ``spaRV1909eb`` (Reina-Valera 1909), read with the PyPI package ``pysword``
  (:func:`bible_verses`).

A missing corpus is a :class:`CorpusError` that says how to install it.
"""

from __future__ import annotations

import functools
import gzip
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "AUSTEN_DB",
    "BIBLES",
    "INSTALL_HINT",
    "NOVELS",
    "SWORD_DIR",
    "CorpusError",
    "austen_chapters",
    "bible_text",
    "bible_verses",
    "paragraphs",
]

NOVELS = (
    "sensesensibility",
    "prideprejudice",
    "mansfieldpark",
    "emma",
    "northangerabbey",
    "persuasion",
)
AUSTEN_DB = "usr/lib/R/site-library/janeaustenr/data/Rdata"
SWORD_DIR = "usr/share/sword"
BIBLES = {"kjv": "engKJV2006eb", "spanish": "spaRV1909eb"}
INSTALL_HINT = (
    "run `bash scripts/install.sh` (it downloads the Debian packages r-cran-janeaustenr, "
    "sword-text-kjv and sword-text-sparv and unpacks them into data/debian), or point "
    "dataset.root at a directory holding them"
)
_CHAPTER = re.compile(r"^\s*chapter\s+([ivxlc]+|\d+)\b", re.IGNORECASE)


class CorpusError(FileNotFoundError):
    """A corpus file is missing or unreadable."""


def _rdb_objects(db: Path) -> dict[str, np.ndarray]:
    """Every object of an R lazy-load database (``db.rdx`` index + ``db.rdb`` blobs)."""
    import rdata

    rdx, rdb = db.with_suffix(".rdx"), db.with_suffix(".rdb")
    for f in (rdx, rdb):
        if not f.is_file():
            raise CorpusError(f"Jane Austen corpus file {f} not found: {INSTALL_HINT}")
    with warnings.catch_warnings():  # rdata warns that the serialisation header is "RDS"
        warnings.simplefilter("ignore", UserWarning)
        index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress(rdx.read_bytes())))
        blob = rdb.read_bytes()
        out = {}
        for name, (offset, length) in index["variables"].items():
            chunk = blob[int(offset) : int(offset) + int(length)]
            (size,) = struct.unpack(">i", chunk[:4])  # uncompressed size, then a zlib stream
            raw = zlib.decompress(chunk[4:])
            if len(raw) != size:
                raise CorpusError(f"{rdb}: object {name} is corrupt ({len(raw)} != {size} bytes)")
            out[str(name)] = rdata.conversion.convert(rdata.parser.parse_data(raw))
    return out


def austen_chapters(root: str | Path) -> list[tuple[str, int, list[str]]]:
    """``(novel, chapter number, lines)`` for every chapter of the six novels, in
    :data:`NOVELS` order; the front matter before chapter 1 is dropped."""
    books = _rdb_objects(Path(root) / AUSTEN_DB)
    missing = [n for n in NOVELS if n not in books]
    if missing:
        raise CorpusError(f"{Path(root) / AUSTEN_DB}.rdb lacks the novels {missing}")
    chapters = []
    for novel in NOVELS:
        current: list[str] | None = None
        number = 0
        for line in (str(x) for x in books[novel]):
            if _CHAPTER.match(line):
                number += 1
                current = []
                chapters.append((novel, number, current))
            elif current is not None:
                current.append(line)
    return chapters


def paragraphs(lines: list[str]) -> list[str]:
    """Blank-line separated paragraphs, each joined into one string."""
    out, cur = [], []
    for line in lines:
        if line.strip():
            cur.append(line.strip())
        elif cur:
            out.append(" ".join(cur))
            cur = []
    if cur:
        out.append(" ".join(cur))
    return out


def _sword_bible(root: str | Path, which: str):
    """The pysword Bible ``which`` (in :data:`BIBLES`) under ``root``, reading each compressed
    block once for a run of verses (pysword inflates a block per verse, ~3 ms; cached, the whole
    Bible takes ~3 s)."""
    from pysword.modules import SwordModules

    if which not in BIBLES:
        raise ValueError(f"unknown bible {which!r}; choose from {sorted(BIBLES)}")
    path = Path(root) / SWORD_DIR
    confs = {c.name.lower() for c in (path / "mods.d").glob("*.conf")} if path.is_dir() else set()
    if f"{BIBLES[which].lower()}.conf" not in confs:
        raise CorpusError(f"SWORD module {BIBLES[which]} not found under {path}: {INSTALL_HINT}")
    modules = SwordModules(str(path))
    modules.parse_modules()
    bible = modules.get_bible_from_module(BIBLES[which])
    bible._decompressed_text = functools.lru_cache(maxsize=8)(bible._decompressed_text)
    return bible


def _refs(bible) -> list[tuple[str, int, int]]:
    """Every verse reference ``(OSIS book, chapter, verse)`` of ``bible``, in canonical order."""
    return [
        (book.osis_name, chapter + 1, verse + 1)
        for testament in ("ot", "nt")
        for book in bible.get_structure().get_books().get(testament, [])
        for chapter, n_verses in enumerate(book.chapter_lengths)
        for verse in range(n_verses)
    ]


def bible_text(root: str | Path, which: str) -> dict[tuple[str, int, int], str]:
    """Every verse of a SWORD Bible by reference ``(OSIS book, chapter, verse)``, in canonical
    order, as pysword cleans it (markup removed), stripped; a reference without text maps to
    ``""``."""
    bible = _sword_bible(root, which)
    books: dict[str, list[tuple[str, int, int]]] = {}
    for ref in _refs(bible):
        books.setdefault(ref[0], []).append(ref)
    out: dict[tuple[str, int, int], str] = {}
    for book, refs in books.items():
        texts = list(bible.get_iter(books=[book], clean=True))
        if len(texts) != len(refs):
            raise CorpusError(f"{BIBLES[which]}: {book} has {len(texts)} verses, not {len(refs)}")
        out.update((r, (t or "").strip()) for r, t in zip(refs, texts, strict=True))
    return out


def bible_verses(root: str | Path, which: str, size: int | None = None, seed: int = 0) -> list[str]:
    """Verses of a SWORD Bible (``which`` in :data:`BIBLES`), in canonical order: all of them,
    or ``size`` drawn uniformly without replacement (by ``seed``) from every verse reference.
    Empty verses (a few references have no text in a module) are skipped, so a sample may be
    slightly short."""
    bible = _sword_bible(root, which)
    refs = _refs(bible)
    if size is not None and size < len(refs):
        keep = np.sort(np.random.default_rng(seed).choice(len(refs), size=size, replace=False))
        refs = [refs[i] for i in keep]
    verses = (bible.get(books=[b], chapters=[c], verses=[v], clean=True) for b, c, v in refs)
    return [v.strip() for v in verses if v and v.strip()]
