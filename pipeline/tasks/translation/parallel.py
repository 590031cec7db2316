"""Plain-text parallel corpora (``dataset.name: parallel_text``): the format of WMT17 and most MT
data, one sentence per line, the source and target files of a split aligned line by line. The
paper-scale config (``config/wmt17.yaml``) reads WMT17 En-De this way; the tests read a tiny
made-up corpus in the same format.

``dataset.files`` names each split's files relative to ``dataset.root``: ``train``, ``valid`` and
``test`` are required, ``shift`` (another domain or test year, never trained on) is optional. An
empty line on either side drops the pair (counted, ``manifest["dropped"]``); training pairs
longer than ``max_words`` whitespace words on either side are dropped and counted;
``train_size`` keeps a fixed random subset (``split_seed``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError

__all__ = ["SPLITS", "read_lines", "read_splits"]

SPLITS = ("train", "valid", "test", "shift")
REQUIRED = ("train", "valid", "test")


def read_lines(path: Path, key: str) -> list[str]:
    """The lines of a UTF-8 text file without their line ends; a missing or undecodable file is a
    :class:`ConfigError` naming ``key``."""
    if not path.is_file():
        raise ConfigError(key, str(path), "an existing text file (one sentence per line)")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ConfigError(key, str(path), f"a UTF-8 text file ({err})") from err


def read_splits(ds: dict) -> tuple[dict[str, list], dict[str, int]]:
    """``({split: [(ref, source, target)]}, dropped)`` of the files in ``ds["files"]``; ``ref`` is
    ``(split, line number)``."""
    root, files = Path(ds["root"]), ds["files"]
    missing = [s for s in REQUIRED if s not in files]
    if missing:
        raise ConfigError("dataset.files", sorted(files), f"also {missing}")
    splits, dropped = {}, {"empty": 0, "long_train": 0}
    for split in (s for s in SPLITS if s in files):
        key = f"dataset.files.{split}"
        src = read_lines(root / files[split]["source"], f"{key}.source")
        tgt = read_lines(root / files[split]["target"], f"{key}.target")
        if len(src) != len(tgt):
            raise ConfigError(
                key,
                files[split],
                f"files of equal line counts (source {len(src)}, target {len(tgt)})",
            )
        rows = []
        for i, (s, t) in enumerate(zip(src, tgt, strict=True)):
            s, t = " ".join(s.split()), " ".join(t.split())
            if not s or not t:
                dropped["empty"] += 1
                continue
            rows.append(((split, i + 1), s, t))
        splits[split] = rows
    max_words = int(ds.get("max_words", 80))
    train = splits["train"]
    keep = [p for p in train if max(len(p[1].split()), len(p[2].split())) <= max_words]
    dropped["long_train"] = len(train) - len(keep)
    size = ds.get("train_size")
    if size is not None and int(size) < len(keep):
        rng = np.random.default_rng(int(ds.get("split_seed", 0)))
        keep = [keep[i] for i in np.sort(rng.choice(len(keep), size=int(size), replace=False))]
    splits["train"] = keep
    return splits, dropped
