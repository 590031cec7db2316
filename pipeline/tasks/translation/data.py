"""The translation task's prepared data (``rule prepare_data``): the aligned verse pairs of
:mod:`.corpus` (or the plain-text parallel files of :mod:`.parallel`), split, with their
SentencePiece vocabularies (:mod:`.vocab`) and ids.

Files (``out/``):

* ``spm/source.model`` and ``spm/target_V<V>.model`` for each target size V of ``vocab_sizes``
  (trained on the train split only);
* ``{split}.safetensors``: ``src.tokens``/``src.offsets`` and, for every V of a split with
  references, ``tgt<V>.tokens``/``tgt<V>.offsets`` (int32 tokens, int64 offsets ``[n + 1]``: the
  ``i``-th sentence is ``tokens[offsets[i]:offsets[i + 1]]``, EOS included);
* ``{split}.json``: each sentence's reference (book, chapter, verse; or split, line) and its
  source and target
  text (the references BLEU is computed against; OOD sets have no target);
* ``manifest.json``: counts, what was dropped and why, every file's sha256.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pipeline import __version__
from pipeline.errors import ConfigError
from pipeline.imports import code_fingerprint
from pipeline.io import (
    ArtifactError,
    atomic_path,
    atomic_save,
    atomic_write_text,
    ragged,
    ragged_lengths,
    read_manifest,
    read_tensors,
    sha256_file,
)
from pipeline.tasks.translation import corpus as C
from pipeline.tasks.translation import parallel as P
from pipeline.tasks.translation import vocab as Vb

__all__ = ["SPLITS", "load_manifest", "load_split", "prepare", "ragged_rows", "tokenizer"]

SPLITS = ("train", "valid", "test", "shift")
"""The splits with references; the OOD sets (``ood_<name>``) have sources only."""
RULE = "prepare_data"


def _write_model(model: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(model)


def prepare(cfg: dict, out: str | Path) -> dict:
    """Read (the Bibles aligned by verse, or plain-text parallel files: :mod:`.parallel`), split
    and encode the corpus the ``dataset``, ``ood`` and ``vocab_sizes`` config slices describe;
    returns the manifest."""
    ds, ood, sizes = cfg["dataset"], cfg["ood"], [int(v) for v in cfg["vocab_sizes"]]
    out, root = Path(out), Path(ds["root"])
    if ds["name"] == "parallel_text":
        splits, dropped = P.read_splits(ds)
        pairs = [p for rows in splits.values() for p in rows]
    else:
        pairs, dropped = C.align(*C.read_bibles(root))
        splits, more = C.split_pairs(pairs, ds)
        dropped.update(more)
    sources = {name: [s for _, s, _ in rows] for name, rows in splits.items()}
    refs = {name: [list(ref) for ref, _, _ in rows] for name, rows in splits.items()}
    targets = {name: [t for _, _, t in rows] for name, rows in splits.items()}
    rng = np.random.default_rng(int(ood.get("seed", 0)))
    size = ood.get("size")
    for name in ood.get("sets", []):
        if name == "permuted":
            test = sources["test"]
            keep = np.sort(
                rng.choice(len(test), size=min(size or len(test), len(test)), replace=False)
            )
            sources["ood_permuted"] = C.permute_words([test[i] for i in keep], rng)
        elif name == "austen":
            sources["ood_austen"] = C.austen_sources(root, int(size or 1000), rng)
        else:
            raise ConfigError("ood.sets", name, f"one of {list(C.OOD_SETS)}")
    for name, rel in (ood.get("files") or {}).items():  # source-only files, one per line
        lines = [" ".join(x.split()) for x in P.read_lines(root / rel, f"ood.files.{name}")]
        lines = [x for x in lines if x]
        sources[f"ood_{name}"] = lines[: int(size)] if size else lines
    models, source_vocab = _vocabularies(ds, sources["train"], targets["train"], sizes)
    files = {}
    for name, model in models.items():
        _write_model(model, out / "spm" / f"{name}.model")
        files[f"spm/{name}.model"] = sha256_file(out / "spm" / f"{name}.model")
    src_sp = Vb.processor(models["source"])
    manifest = {
        "task": "translation",
        "pipeline_version": __version__,
        "code_sha256": code_fingerprint("prepare", "translation"),
        "config": cfg,
        "pairs": len(pairs),
        "dropped": dropped,
        "vocab_sizes": sizes,
        "source_vocab": source_vocab,
        **({"joint_vocab": True} if ds.get("joint_vocab") else {}),
        "files": files,
        "splits": {},
    }
    for name, src in sources.items():
        tensors = {f"src.{k}": t for k, t in ragged(Vb.encode(src_sp, src)).items()}
        if name in targets:
            for v in sizes:
                ids = Vb.encode(Vb.processor(models[f"target_V{v}"]), targets[name])
                tensors.update((f"tgt{v}.{k}", t) for k, t in ragged(ids).items())
        atomic_save(tensors, out / f"{name}.safetensors")
        text = {
            "src": src,
            **({"ref": refs[name], "tgt": targets[name]} if name in targets else {}),
        }
        atomic_write_text(json.dumps(text, ensure_ascii=False), out / f"{name}.json")
        manifest["splits"][name] = {
            "n": len(src),
            "source_tokens": int(tensors["src.tokens"].numel()),
            **{
                f"target_tokens_V{v}": int(tensors[f"tgt{v}.tokens"].numel())
                for v in sizes
                if name in targets
            },
            "sha256": sha256_file(out / f"{name}.safetensors"),
            "text_sha256": sha256_file(out / f"{name}.json"),
        }
    atomic_write_text(json.dumps(manifest, indent=2), out / "manifest.json")
    return manifest


def _sample(sentences: list[str], ds: dict) -> list[str]:
    """At most ``dataset.spm_sentences`` of the sentences (a fixed random subset, in order), what
    SentencePiece trains on (``null``: all; WMT's millions of lines need a cap)."""
    cap = ds.get("spm_sentences")
    if not cap or len(sentences) <= int(cap):
        return sentences
    rng = np.random.default_rng(int(ds.get("split_seed", 0)))
    return [sentences[i] for i in np.sort(rng.choice(len(sentences), int(cap), replace=False))]


def _vocabularies(ds: dict, src: list[str], tgt: list[str], sizes: list[int]):
    """``({name: serialised SentencePiece model}, source vocabulary size)``: a source model of
    ``dataset.source_vocab`` and a target model per V; with ``dataset.joint_vocab`` one model
    of the one V trained on both sides, which the source uses too (the WMT recipe)."""
    if ds.get("joint_vocab"):
        if len(sizes) != 1:
            raise ConfigError("vocab_sizes", sizes, "one size with dataset.joint_vocab: true")
        model = Vb.train(_sample(src + tgt, ds), sizes[0])
        return {"source": model, f"target_V{sizes[0]}": model}, sizes[0]
    if "source_vocab" not in ds:
        raise ConfigError("dataset.source_vocab", None, "a size (or dataset.joint_vocab: true)")
    models = {"source": Vb.train(_sample(src, ds), int(ds["source_vocab"]), "dataset.source_vocab")}
    for v in sizes:
        models[f"target_V{v}"] = Vb.train(_sample(tgt, ds), v)
    return models, int(ds["source_vocab"])


def load_manifest(data_dir: str | Path) -> dict:
    return read_manifest(data_dir, RULE, task="translation", what="a prepared parallel corpus")


def tokenizer(data_dir: str | Path, side: str, vocab: int | None = None):
    """The SentencePiece processor of the source (``side="source"``) or of the target at V =
    ``vocab``, checked against the manifest."""
    manifest = load_manifest(data_dir)
    name = "source" if side == "source" else f"target_V{vocab}"
    rel = f"spm/{name}.model"
    if rel not in manifest["files"]:
        raise ConfigError(
            "vocab_sizes", vocab, f"one of the prepared sizes {manifest['vocab_sizes']}"
        )
    path = Path(data_dir) / rel
    if not path.is_file() or sha256_file(path) != manifest["files"][rel]:
        raise ArtifactError(path, "is missing or does not match its recorded sha256", RULE)
    return Vb.processor(path.read_bytes())


def ragged_rows(t: dict, key: str, path: Path, rule: str = RULE) -> list[torch.Tensor]:
    """The id sequences (int64) of the :func:`pipeline.io.ragged` pair ``<key>.tokens``,
    ``<key>.offsets`` of the tensors ``t`` read from ``path``; offsets that do not index the
    tokens are an :class:`ArtifactError` naming ``rule``."""
    tokens, offsets = t[f"{key}.tokens"].long(), t[f"{key}.offsets"]
    lengths = ragged_lengths(tokens, offsets, path, rule, f"{key}: ")
    return list(torch.split(tokens, lengths.tolist()))


def load_split(data_dir: str | Path, split: str, vocab: int | None) -> dict:
    """One split: ``src`` (list of ``[S_i]`` id tensors), ``tgt`` (``[T_i]`` at V = ``vocab``,
    where the split has references) and its texts (``src_text``, ``tgt_text``, ``refs``)."""
    manifest = load_manifest(data_dir)
    entry = manifest["splits"].get(split)
    path = Path(data_dir) / f"{split}.safetensors"
    if entry is None:
        raise ArtifactError(path, "is not a split of the prepared corpus", RULE)
    t = read_tensors(path, sha256=entry["sha256"], rule=RULE)
    text_path = Path(data_dir) / f"{split}.json"
    if not text_path.is_file() or sha256_file(text_path) != entry["text_sha256"]:
        raise ArtifactError(text_path, "is missing or does not match its recorded sha256", RULE)
    text = json.loads(text_path.read_text())
    out = {"src": ragged_rows(t, "src", path), "src_text": text["src"]}
    if "tgt" in text and vocab is not None:
        if f"tgt{vocab}.tokens" not in t:
            raise ConfigError(
                "vocab_sizes", vocab, f"one of the prepared {manifest['vocab_sizes']}"
            )
        out.update(tgt=ragged_rows(t, f"tgt{vocab}", path), tgt_text=text["tgt"], refs=text["ref"])
    return out
