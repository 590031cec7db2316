"""The token task's teacher: the online statistics a student learns from, and the per-token cache
of the evaluation splits that names its members."""

import json
import shutil

import pytest
import torch

from pipeline import methods
from pipeline.io import ArtifactError, sha256_file
from pipeline.maths import losses as Lm
from pipeline.maths import stats as Sm
from pipeline.stages.train import train_member
from pipeline.tasks.text import corpus as TD
from pipeline.tasks.text import teacher as TT
from tests.conftest import TEXT_CFG, fake_corpus

CFG = {**TEXT_CFG, "epochs": 1}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A fake corpus, two members at V = 20 and their teacher cache."""
    d = tmp_path_factory.mktemp("text")
    data = fake_corpus(d / "data")
    members = []
    for seed in (0, 1):
        p = d / f"m{seed}.safetensors"
        train_member("text", data, CFG, seed, p, d / f"m{seed}.pt", 20, log=lambda s: None)
        members.append(p)
    TT.build_teacher(data, 20, members, d / "teacher")
    return d, data, members


def _online(run, method, options):
    d, data, members = run
    seqs = TD.load_sequences(data, "train", 20)
    val = TD.load_sequences(data, "val", 20)
    teacher = TT.OnlineTeacher(
        d / "teacher", members, 20, seqs["inputs"], val, method, options, torch.device("cpu")
    )
    return teacher, seqs


@pytest.mark.parametrize("method", ["end", "end2", "pd_end2", "pd_fkl"])
def test_online_statistics_are_the_members_statistics(run, method):
    options = {"model_offset": 0.0} if method == "end2" else {}
    teacher, seqs = _online(run, method, options)
    idx = torch.arange(7)
    got = teacher.stats(idx, progress=0)
    x = TT.trim(seqs["inputs"][idx])
    with torch.no_grad():
        z = torch.stack([m(x) for m in teacher.members], 1).double()  # [T, M, V]
    ref = Sm.teacher_stats(z)
    assert got.mean_probs.dtype == torch.float32  # the online path keeps its float32
    torch.testing.assert_close(got.mean_probs.double(), ref.mean_probs, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got.rmi, ref.rmi, rtol=1e-4, atol=1e-6)
    assert (got.floored_mean_log_probs is not None) == (method == "end2")


def test_end2_temperature_schedule_retempers_members(run):
    opts = {"model_offset": 0.0, "temperature": {"initial": 3.0, "hold_epochs": 1}}
    teacher, seqs = _online(run, "end2", opts)
    idx = torch.arange(5)
    x = TT.trim(seqs["inputs"][idx])
    with torch.no_grad():
        z = torch.stack([m(x) for m in teacher.members], 1).double()
    s = torch.randn(z.shape[0], 20, dtype=torch.float64)
    hot = Lm.end2_loss(s, teacher.stats(idx, progress=0), 0.0)
    torch.testing.assert_close(hot, Lm.end2_loss(s, z, 0.0, temperature=3.0), rtol=1e-5, atol=1e-6)
    cold = Lm.end2_loss(s, teacher.stats(idx, progress=5), 0.0)
    torch.testing.assert_close(cold, Lm.end2_loss(s, z, 0.0), rtol=1e-5, atol=1e-6)


def test_cache_names_its_members_and_refuses_others(run):
    d, data, members = run
    info = TT.check_manifest(d / "teacher", 20, members)
    assert info["member_sha256"] == [sha256_file(p) for p in members]
    assert info["splits"] == ["test"] and info["tokens"]["test"] > 0
    with pytest.raises(ValueError, match="other members"):
        TT.check_manifest(d / "teacher", 20, members[:1])
    with pytest.raises(ValueError, match="is for V=20, not 30"):
        TT.check_manifest(d / "teacher", 30, members)


def _val_tokens(teacher, student):
    """Every val token's member log-probs [T, M, V], student logits [T, V] and target [T]."""
    x = TT.trim(teacher.val["inputs"])
    y = teacher.val["targets"][:, : x.shape[1]]
    with torch.no_grad():
        lp = torch.stack([torch.log_softmax(m(x).double(), -1) for m in teacher.members], 1)
        z = student(x).double()
    return lp, z, y[y >= 0]


@pytest.mark.parametrize(("method", "options"), [("end", {}), ("pd_end2", {"model_offset": 1.0})])
def test_learning_curve_point_against_a_direct_computation(run, method, options):
    """Agreement, NLL gap and KL(pi_bar || softmax z) over all val tokens (a Dirichlet student
    too: its point prediction is softmax z, as in the evaluation)."""
    teacher, _ = _online(run, method, options)
    torch.manual_seed(3)
    student = TT.load_lm(run[2][0])[0]  # a trained model as the student
    with torch.no_grad():
        student.head.bias.add_(torch.randn(20))  # not a member: the gap is not zero
    point = teacher.curve(student)
    lp, z, y = _val_tokens(teacher, student)
    pbar = lp.exp().mean(1)
    ensemble = torch.distributions.Categorical(probs=pbar)
    pred = torch.distributions.Categorical(logits=z)
    kl = torch.distributions.kl_divergence(ensemble, pred).mean()
    gap = -(pred.log_prob(y).mean() - ensemble.log_prob(y).mean())
    member_agree = (lp.argmax(-1) == pbar.argmax(-1)[:, None]).double().mean()
    assert point["val_agreement"] == pytest.approx(
        float((z.argmax(-1) == pbar.argmax(-1)).double().mean())
    )
    assert point["val_kl"] == pytest.approx(float(kl), rel=1e-5)  # float32 terms, float64 sums
    assert point["val_nll_gap"] == pytest.approx(float(gap), rel=1e-5)
    assert point["member_agreement"] == pytest.approx(float(member_agree))
    members_as_student = teacher.curve(teacher.members[0])
    assert members_as_student["val_agreement"] <= 1.0 and members_as_student["val_kl"] > 0
    assert teacher.curve(student) == point  # the cached ensemble gives the same point again


def test_log_marginal_is_the_ensemble_mean_over_train_tokens(run):
    teacher, seqs = _online(run, "end", {})
    got = teacher.log_marginal(sentences=30)
    x = TT.trim(seqs["inputs"][:30])
    with torch.no_grad():
        pbar = torch.stack([torch.softmax(m(x).double(), -1) for m in teacher.members]).mean(0)
    assert got.shape == (20,) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), pbar.mean(0).log(), rtol=1e-6, atol=1e-6)
    assert float(got.exp().sum()) == pytest.approx(1.0, abs=1e-5)


def _member_logits(teacher, inputs, idx):
    return TT.member_logits(teacher.members, TT.trim(inputs[idx]))


def _assert_cache_gives_the_members(teacher, inputs, idx):
    cached = teacher.features.logits(idx)
    for got, ref in zip(cached, _member_logits(teacher, inputs, idx), strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


def test_train_features_rebuild_the_members_logits(run):
    """The cache's features [tokens, M, d] and heads give each member's logits on any batch of
    train sequences, in the members' token order, as running the members does."""
    d, data, members = run
    teacher, seqs = _online(run, "end", {})
    cached = TT.load_split(d / "teacher", TT.TRAIN, TT.check_manifest(d / "teacher", 20, members))
    n, m = len(seqs["lengths"]), len(members)
    assert cached["features"].shape == (int(seqs["lengths"].sum()), m, 8)
    assert cached["features"].dtype == torch.float32
    assert cached["head_weight"].shape == (m, 20, 8) and cached["head_bias"].shape == (m, 20)
    g = torch.Generator().manual_seed(0)
    for size in (1, 5, 16, n):  # a batch of one sequence, a short last batch, all of them
        idx = torch.randperm(n, generator=g)[:size]
        _assert_cache_gives_the_members(teacher, seqs["inputs"], idx)


def test_train_features_follow_a_train_subset(run):
    """A student on ``train_sentences: n`` indexes the cache through the same fixed subset."""
    d, data, members = run
    seqs = TD.load_sequences(data, "train", 20)
    keep = TD.train_rows(len(seqs["lengths"]), 9)
    assert keep is not None and len(keep) == 9 and bool((keep[1:] > keep[:-1]).all())
    assert TD.train_rows(len(seqs["lengths"]), len(seqs["lengths"])) is None
    inputs = seqs["inputs"][keep]
    val = TD.load_sequences(data, "val", 20)
    teacher = TT.OnlineTeacher(d / "teacher", members, 20, inputs, val, "end", {}, "cpu")
    idx = torch.tensor([8, 0, 3])
    _assert_cache_gives_the_members(teacher, inputs, idx)


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("end", {}),
        ("end2", {"model_offset": 0.0}),
        ("end2", {"model_offset": 1.0, "smoothing": 0.01}),
        ("pd_end2", {"model_offset": 1.0}),
        ("pd_end2", {"model_offset": 0.0}),
        ("pd_fkl", {}),
    ],
)
def test_every_loss_from_the_cache_matches_the_float64_members(run, method, options):
    """Loss and gradient from the cached features (float32 statistics) against the float64
    statistics of the members run on the batch: the loss within 1e-5 relative, the gradient
    within 1e-5 relative or 1e-6 of its largest entry."""
    teacher, seqs = _online(run, method, options)
    idx = torch.arange(12)
    z = torch.stack(_member_logits(teacher, seqs["inputs"], idx), 1).double()  # [T, M, V]
    torch.manual_seed(1)
    s = torch.randn(z.shape[0], 20, dtype=torch.float64, requires_grad=True)
    got = methods.loss(method, options, s, teacher.stats(idx, progress=1.0))
    (g_got,) = torch.autograd.grad(got, s)
    ref = methods.loss(
        method, options, s, Sm.teacher_stats(z, smoothing=options.get("smoothing", 0.0))
    )
    (g_ref,) = torch.autograd.grad(ref, s)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)
    scale = float(g_ref.abs().max())  # float32 statistics: O(1e-7) of the gradient's scale
    torch.testing.assert_close(g_got, g_ref, rtol=1e-5, atol=1e-6 * scale)


def test_train_features_refuse_another_split_or_a_damaged_file(run, tmp_path):
    d, data, members = run
    seqs = TD.load_sequences(data, "train", 20)
    val = TD.load_sequences(data, "val", 20)

    def teacher(dir_, inputs):
        return TT.OnlineTeacher(dir_, members, 20, inputs, val, "end", {}, "cpu")

    with pytest.raises(ArtifactError, match="another train split"):
        teacher(d / "teacher", seqs["inputs"].flip(0))  # other sequences than the cache's
    with pytest.raises(ArtifactError, match="another train split"):
        teacher(d / "teacher", seqs["inputs"][:-1])  # fewer than any train_rows subset gives
    copy = tmp_path / "teacher"
    shutil.copytree(d / "teacher", copy)
    with open(copy / "train.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\1\2\3")
    with pytest.raises(ArtifactError, match="sha256"):
        teacher(copy, seqs["inputs"])
    info = json.loads((copy / "manifest.json").read_text())
    del info["sha256"]["train"]
    (copy / "manifest.json").write_text(json.dumps(info))
    with pytest.raises(ArtifactError, match="missing from the teacher cache.*cache_teacher"):
        teacher(copy, seqs["inputs"])
