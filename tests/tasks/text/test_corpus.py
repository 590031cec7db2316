"""The token task's corpus: tokeniser, sentence splitter, chapter splits, OOD sets, vocabulary
mapping. Reads the real Debian corpora that scripts/install.sh unpacks into data/debian."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline import corpora as C
from pipeline.tasks.text import corpus as TD

REPO = Path(__file__).resolve().parents[3]
ROOT = REPO / "data" / "debian"
needs_corpus = pytest.mark.skipif(
    not (ROOT / ".complete").is_file(), reason="run scripts/install.sh to fetch the corpora"
)


def test_tokenize_words_punctuation_abbreviations_unicode():
    assert TD.tokenize("Mr. Darcy didn't _quite_ smile; 1813!") == [
        "mr.", "darcy", "didn't", "quite", "smile", ";", "1813", "!",
    ]  # fmt: skip
    assert TD.tokenize("Y la tierra estaba desordenada y vacía, ¿no?") == [
        "y", "la", "tierra", "estaba", "desordenada", "y", "vacía", ",", "¿", "no", "?",
    ]  # fmt: skip


def test_sentences_end_after_terminators_and_closing_quotes():
    toks = TD.tokenize('"Is it so?" said she. Yes! and more')
    assert TD.sentences(toks) == [
        ['"', "is", "it", "so", "?", '"'],
        ["said", "she", "."],
        ["yes", "!"],
        ["and", "more"],
    ]


def test_paragraphs_join_lines_until_blank():
    assert C.paragraphs(["a b", "c", "", "", "d", ""]) == ["a b c", "d"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("text")
    cfg = {
        "dataset": {"root": str(ROOT), "max_len": 20, "val_size": 300, "test_size": 300},
        "ood": {"sets": ["permuted", "kjv", "spanish"], "size": 50, "seed": 1},
    }
    return out, TD.prepare(cfg, out)


@needs_corpus
def test_austen_has_six_novels_and_their_chapters():
    chapters = C.austen_chapters(ROOT)
    per_novel = Counter(novel for novel, _, _ in chapters)
    assert per_novel == {
        "sensesensibility": 50, "prideprejudice": 61, "mansfieldpark": 48,
        "emma": 55, "northangerabbey": 31, "persuasion": 24,
    }  # fmt: skip
    # chapter numbers restart per novel and count up
    assert [n for novel, n, _ in chapters if novel == "persuasion"] == list(range(1, 25))


@needs_corpus
def test_prepare_splits_vocab_and_ood_sets(prepared):
    out, manifest = prepared
    assert manifest["config"]["dataset"]["max_len"] == 20 and manifest["pipeline_version"]
    vocab = json.loads((out / "vocab.json").read_text())
    assert vocab[:2] == list(TD.SPECIALS) and len(vocab) == manifest["num_words"] + 2
    train = load_file(out / "train.safetensors")
    counts = torch.bincount(train["tokens"].long(), minlength=len(vocab))
    words = counts[2:]
    assert (words[:-1] >= words[1:]).all(), "ids must rank words by train frequency"
    assert counts[TD.UNK] == 0, "every train word is in the vocabulary"
    for split in ("val", "test"):
        assert manifest["splits"][split]["n"] == 300
    lengths = train["offsets"].diff()
    assert lengths.max() <= 20 and lengths.min() >= 3
    assert {"ood_permuted", "ood_kjv", "ood_spanish"} <= set(manifest["splits"])
    assert (
        manifest["splits"]["ood_spanish"]["unk_rate"]
        > 0.4
        > manifest["splits"]["ood_kjv"]["unk_rate"]
        > manifest["splits"]["test"]["unk_rate"]
    )
    assert 0.9 < manifest["coverage"]["5000"] <= manifest["coverage"]["10000"] <= 1.0


@needs_corpus
def test_permuted_set_permutes_test_sentences(prepared):
    out, _ = prepared
    test = load_file(out / "test.safetensors")
    perm = load_file(out / "ood_permuted.safetensors")
    seqs = {
        tuple(sorted(test["tokens"][a:b].tolist()))
        for a, b in zip(test["offsets"][:-1], test["offsets"][1:], strict=True)
    }
    pairs = list(zip(perm["offsets"][:-1], perm["offsets"][1:], strict=True))
    assert len(pairs) == 50
    changed = 0
    for a, b in pairs:
        s = perm["tokens"][a:b].tolist()
        assert tuple(sorted(s)) in seqs
        changed += s != sorted(s)
    assert changed > 40


@needs_corpus
def test_load_sequences_maps_rare_words_to_unk_and_shifts_inputs(prepared):
    out, _ = prepared
    raw = load_file(out / "test.safetensors")
    for v in (10, 1000):
        s = TD.load_sequences(out, "test", v)
        n = len(raw["offsets"]) - 1
        assert s["inputs"].shape == s["targets"].shape and s["inputs"].shape[0] == n
        first = raw["tokens"][: raw["offsets"][1]].long()
        expect = torch.where(first < v, first, torch.zeros_like(first))
        length = len(first)
        assert torch.equal(s["targets"][0, :length], expect)
        assert s["inputs"][0, 0] == v  # BOS
        assert torch.equal(s["inputs"][0, 1:length], expect[:-1])
        assert (s["targets"][0, length:] == -1).all() and (s["inputs"][0, length:] == -1).all()
        assert s["targets"].max() < v
        assert ((s["inputs"] >= 0) == (s["targets"] >= 0)).all()
    with pytest.raises(ValueError, match="vocab_size"):
        TD.load_sequences(out, "test", 2)


def test_missing_corpus_names_the_install_step(tmp_path):
    with pytest.raises(C.CorpusError, match="scripts/install.sh"):
        C.austen_chapters(tmp_path)
    (tmp_path / C.SWORD_DIR / "mods.d").mkdir(parents=True)
    with pytest.raises(C.CorpusError, match="engKJV2006eb"):
        C.bible_verses(tmp_path, "kjv")
    with pytest.raises(ValueError, match="unknown bible"):
        C.bible_verses(tmp_path, "latin")


def test_load_rejects_a_corrupt_split(tmp_path):
    from pipeline.io import atomic_save, sha256_file

    path = tmp_path / "test.safetensors"
    atomic_save(
        {"tokens": torch.arange(5, dtype=torch.int32), "offsets": torch.tensor([0, 2, 4])}, path
    )
    splits = {"test": {"n": 2, "tokens": 5, "sha256": sha256_file(path)}}
    manifest = {"task": "text", "num_words": 8, "splits": splits}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="test.safetensors: offsets do not index"):
        TD.load_sequences(tmp_path, "test", 10)
    with pytest.raises(ValueError, match="vocab_sizes: 11 is not allowed: at most 10"):
        TD.load_sequences(tmp_path, "test", 11)
