"""The students' targets from the ensemble's own translations (students.targets: ensemble,
pipeline.tasks.translation.distill_data): the rows decoded cover every reader's subset; the
merged shards hold exactly the ensemble's beam-search translations, in train order; the
training set of a student is those translations; bad or foreign artifacts are refused."""

import json
import random

import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.io import ArtifactError, save_model
from pipeline.tasks import translation as T
from pipeline.tasks.translation import distill_data as DD
from pipeline.tasks.translation.batches import keep_rows
from pipeline.tasks.translation.data import load_split
from pipeline.tasks.translation.decode import beam_search
from pipeline.tasks.translation.model import build, load_model

V = 24
MODEL = {"name": "transformer", "dim": 16, "heads": 2, "enc_layers": 1, "dec_layers": 1,
         "ffn": 32, "dropout": 0.0, "max_len": 64}  # fmt: skip
DECODE = {"beam": 3, "alpha": 1.0, "batch": 7}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny made-up parallel corpus, prepared (joint V = 30), and two random members."""
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    for name, n in (("train", 60), ("valid", 8), ("test", 8)):
        src = [[rng.randrange(20) for _ in range(rng.randint(2, 6))] for _ in range(n)]
        (root / f"{name}.src").write_text("\n".join(" ".join(f"w{w}" for w in s) for s in src))
        (root / f"{name}.tgt").write_text("\n".join(" ".join(f"v{w}" for w in s) for s in src))
    cfg = {
        "dataset": {"name": "parallel_text", "root": str(root), "joint_vocab": True,
                    "files": {s: {"source": f"{s}.src", "target": f"{s}.tgt"}
                              for s in ("train", "valid", "test")},
                    "max_words": 50, "split_seed": 0},
        "ood": {"sets": [], "size": 4, "seed": 0},
        "vocab_sizes": [V],
    }  # fmt: skip
    data = root / "data"
    manifest = T.prepare(cfg, data)
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build(MODEL, int(manifest["source_vocab"]), V)
        with torch.no_grad():  # sharper than at initialisation: the beam's choices matter
            model.tgt_embed.weight.mul_(8.0)
        path = root / f"m{seed}.safetensors"
        save_model(model, path, {"config": {"model": MODEL}, "seed": seed, "vocab_size": V,
                                 "source_vocab": int(manifest["source_vocab"])})  # fmt: skip
        members.append(path)
    return data, members


def translate(prepared, out, shards=2, pairs=(None,)):
    data, members = prepared
    rows = T.translated_rows(data, V, list(pairs))
    files = []
    for i in range(shards):
        files.append(out / f"shard{i}.safetensors")
        T.translate_shard(data, members, V, rows[i::shards], DECODE, torch.device("cpu"), files[-1])
    return rows, files


def test_the_decoded_rows_cover_every_reader_s_subset():
    rows = DD.decoded_rows(100, [30, 70])
    assert np.array_equal(rows, keep_rows(100, 70).numpy())
    assert set(keep_rows(100, 30).tolist()) <= set(rows.tolist())  # prefixes of one permutation
    assert np.array_equal(DD.decoded_rows(100, [30, None]), np.arange(100))


def test_merged_shards_are_the_ensemble_s_beam_translations_and_the_student_learns_on_them(
    prepared, tmp_path
):
    data, members = prepared
    rows, files = translate(prepared, tmp_path, shards=3, pairs=(40, 25))
    info = T.merge_translations(files, rows, data, members, V, DECODE, tmp_path)
    assert info["rows"] == 40 and info["decoding"] == {"beam": 3, "alpha": 1.0}
    src = load_split(data, "train", V)["src"]
    models = [load_model(p)[0] for p in members]
    want = beam_search(models, [src[int(r)] for r in rows], beam=3, alpha=1.0)
    got, sha = DD.load_targets(tmp_path, data, V, rows)
    assert sha == info["sha256"]
    assert [g.tolist() for g in got] == [h.tokens for h in want]
    # a student at train_pairs 25 trains on the translations of its own 25 rows
    cfg = {"train_pairs": 25, "val_size": 4, "targets": "ensemble", "translations": str(tmp_path)}
    ts = T.training_set(data, cfg, V, torch.device("cpu"))
    mine = keep_rows(len(src), 25).tolist()
    by_row = {int(r): g for r, g in zip(rows, got, strict=True)}
    assert [t.tolist() for t in ts.inputs.tgt] == [by_row[r].tolist() for r in mine]
    assert [s.tolist() for s in ts.inputs.src] == [src[r].tolist() for r in mine]
    assert ts.fp_inputs["targets"] == info["sha256"]  # new translations: no old checkpoint
    with pytest.raises(ConfigError, match="students.targets"):  # no translations named
        T.training_set(data, {**cfg, "translations": None}, V, torch.device("cpu"))
    reference = T.training_set(data, {**cfg, "targets": "reference"}, V, torch.device("cpu"))
    assert "targets" not in reference.fp_inputs
    assert [t.tolist() for t in reference.inputs.tgt] != [t.tolist() for t in ts.inputs.tgt]


def test_incomplete_or_foreign_translations_are_refused(prepared, tmp_path):
    data, members = prepared
    rows, files = translate(prepared, tmp_path, shards=2, pairs=(20,))
    with pytest.raises(ArtifactError, match="its shards hold 10 rows, not the 20 wanted"):
        T.merge_translations(files[:1], rows, data, members, V, DECODE, tmp_path)
    assert not (tmp_path / "train.safetensors").exists()  # nothing half-written
    T.merge_translations(files, rows, data, members, V, DECODE, tmp_path)
    other = [r for r in range(60) if r not in set(rows.tolist())][:1]
    with pytest.raises(ArtifactError, match=r"lacks 1 of the student's train rows"):
        DD.load_targets(tmp_path, data, V, [int(rows[0]), *other])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "vocab": 25}))
    with pytest.raises(ArtifactError, match="another train split or V"):
        DD.load_targets(tmp_path, data, V, rows)
