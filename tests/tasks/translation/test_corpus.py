"""The translation corpus: verse alignment and cleaning on hand-made Bibles, the splits, the
SentencePiece vocabularies (and the error for a size the train split cannot support)."""

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.tasks.translation import corpus as C
from pipeline.tasks.translation import vocab as Vb


def test_alignment_keeps_verses_present_and_non_empty_on_both_sides_and_counts_the_rest():
    source = {
        ("Gen", 1, 1): "EN el principio crió Dios los cielos",
        ("Gen", 1, 2): "Y la tierra estaba desordenada",
        ("Gen", 1, 3): "   ",
        ("Gen", 1, 4): "Y vió Dios que la luz era buena",
        ("Gen", 2, 1): "FUERON pues acabados",
    }
    target = {
        ("Gen", 1, 1): "In the beginning God created the heaven",
        ("Gen", 1, 2): "¶ And the earth was [without] form",
        ("Gen", 1, 3): "And God said",
        ("Gen", 2, 1): "Thus the heavens were finished",
        ("Exod", 1, 1): "Now these are the names",
    }
    pairs, dropped = C.align(source, target)
    assert [ref for ref, _, _ in pairs] == [("Gen", 1, 1), ("Gen", 1, 2), ("Gen", 2, 1)]
    assert dropped == {"missing": 2, "empty_source": 1, "empty_target": 0}
    assert pairs[0][1] == "En el principio crió Dios los cielos"  # a drop capital
    assert pairs[1][2] == "And the earth was without form"  # no ¶, no supplied-word brackets
    assert pairs[2][1] == "Fueron pues acabados"
    assert C.clean_source("JEHOVÁ es mi pastor", first_verse=False) == "JEHOVÁ es mi pastor"


def _pairs(books=("Gen", "Exod", "Song", "Rev"), per_book=50):
    return [((b, 1, v), f"s {b} {v}", f"t {b} {v}") for b in books for v in range(1, per_book + 1)]


def test_splits_are_disjoint_seeded_and_keep_the_shift_books_out_of_training():
    pairs = _pairs()
    ds = {"valid_size": 10, "test_size": 15, "split_seed": 3}
    splits, dropped = C.split_pairs(pairs, ds)
    refs = {name: {r for r, _, _ in rows} for name, rows in splits.items()}
    assert {len(v) for v in refs.values()} == {10, 15, 75, 100} and dropped == {"long_train": 0}
    assert {r[0] for r in refs["shift"]} == {"Song", "Rev"}
    assert not any(r[0] in ("Song", "Rev") for s in ("train", "valid", "test") for r in refs[s])
    names = list(refs)
    assert all(refs[a].isdisjoint(refs[b]) for a in names for b in names if a < b)
    assert set().union(*refs.values()) == {r for r, _, _ in pairs}
    again, _ = C.split_pairs(pairs, ds)
    assert again == splits
    other, _ = C.split_pairs(pairs, {**ds, "split_seed": 4})
    assert other["test"] != splits["test"]
    long = [*pairs, (("Gen", 2, 1), "a " * 90, "b")]
    assert C.split_pairs(long, ds)[1] == {"long_train": 1}
    with pytest.raises(ConfigError, match="dataset.shift_books"):
        C.split_pairs(pairs, {**ds, "shift_books": ["Revelation"]})
    with pytest.raises(ConfigError, match="dataset.test_size"):
        C.split_pairs(pairs, {**ds, "test_size": 100})


def test_permuted_sources_keep_their_words():
    rng = np.random.default_rng(0)
    out = C.permute_words(["a b c d e f", "x"], rng)
    assert sorted(out[0].split()) == list("abcdef") and out[0] != "a b c d e f" and out[1] == "x"


SENTENCES = [f"the {w} of the {x} is {y}" for w in "abcdefgh" for x in "ijklmn" for y in "opqrst"]


def test_vocabularies_are_deterministic_and_round_trip():
    model = Vb.train(SENTENCES, 40)
    assert model == Vb.train(SENTENCES, 40)
    sp = Vb.processor(model)
    assert sp.get_piece_size() == 40 and sp.pad_id() == Vb.PAD and sp.eos_id() == Vb.EOS
    ids = Vb.encode(sp, SENTENCES[:3])
    assert all(row[-1] == Vb.EOS for row in ids)
    assert [Vb.decode(sp, row + [Vb.PAD, 7]) for row in ids] == SENTENCES[:3]


def test_a_vocabulary_larger_than_the_train_split_supports_names_the_key_and_the_limit():
    with pytest.raises(ConfigError, match=r"config key vocab_sizes: 5000 .* at most \d+"):
        Vb.train(SENTENCES, 5000)
