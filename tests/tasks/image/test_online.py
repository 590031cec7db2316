"""The image task's online teacher (issue 31): with augmenting students the members run on the
student's exact batch, not on the cached un-augmented images; the config check that keeps a
cached teacher away from augmenting students."""

import copy
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import config as C
from pipeline import tasks
from pipeline.errors import ConfigError
from pipeline.maths.stats import teacher_stats
from pipeline.plan import Plan
from pipeline.stages import distill as S
from pipeline.tasks.image import cache as T
from pipeline.tasks.image.batches import to_float
from pipeline.tasks.image.data import load_split
from pipeline.tasks.image.models import load_trained
from pipeline.tasks.image.online import OnlineTeacher

REPO = Path(__file__).resolve().parents[3]
STUDENT = {
    "model": {"name": "small_cnn", "width": 8},
    "epochs": 1,
    "batch_size": 100,
    "optimizer": "adamw",
    "lr": 0.01,
    "device": "cpu",
    "augment": True,
    "teacher_mode": "online",
    "method": "pd_end2",
    "options": {"model_offset": 1.0, "target_offset": 1.0},
}


def test_online_teacher_sees_the_students_augmented_batch(
    prepared, members, cache, tmp_path, monkeypatch
):
    """Every step's statistics are the members' outputs on exactly the student's input, and
    differ from the cached statistics of the same (un-augmented) images."""
    seen, taught = [], []
    real_model, real_stats = S.seeded_model, OnlineTeacher.stats

    def recording_model(*a, **k):
        model = real_model(*a, **k)
        model.register_forward_pre_hook(
            lambda mod, inp: seen.append(inp[0].detach().clone()) if mod.training else None
        )
        return model

    def recording_stats(self, idx, progress, x=None):
        out = real_stats(self, idx, progress, x)
        taught.append((idx.clone(), x.detach().clone(), out))
        return out

    monkeypatch.setattr(S, "seeded_model", recording_model)
    monkeypatch.setattr(OnlineTeacher, "stats", recording_stats)
    out = tmp_path / "s/model.safetensors"
    S.distill("image", prepared, cache, members, STUDENT, 0, out, tmp_path / "c.pt", log=print)

    assert len(taught) == len(seen) == 5  # 500 train images, batches of 100
    nets = [load_trained(p)[0] for p in members]
    cached = T.load_split(cache, "train")
    for (idx, x, stats), student_x in zip(taught, seen, strict=True):
        assert torch.equal(x, student_x)  # the teacher's batch is the student's input
        with torch.no_grad():
            lp = torch.stack([torch.log_softmax(m(x), -1) for m in nets], 1)
        again = teacher_stats(lp)
        torch.testing.assert_close(stats.mean_probs, again.mean_probs, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(stats.rmi, again.rmi, rtol=1e-5, atol=1e-9)
        old = T.stats_from_cache(cached, 3, idx).mean_probs
        gap = (stats.mean_probs - old).abs().max(-1).values
        # far beyond the cache's float16 error (2e-3, next test): the view changed the answer
        assert float(gap.max()) > 0.02
    assert out.exists()


def test_online_teacher_without_augmentation_matches_the_cache(prepared, members, cache):
    """On the un-augmented images the online statistics are the cached ones (to the cache's
    float16 precision): the two modes differ only in the view."""
    teacher = OnlineTeacher(
        cache, prepared, members, {"images": None}, "pd_end2", {}, torch.device("cpu")
    )
    images = load_split(prepared, "train")["images"]
    idx = torch.arange(0, 60)
    got = teacher.stats(idx, 0.0, to_float(images[idx]))
    want = T.stats_from_cache(T.load_split(cache, "train"), 3, idx)
    torch.testing.assert_close(got.mean_probs, want.mean_probs, atol=2e-3, rtol=2e-3)
    with pytest.raises(ValueError, match="needs the student's input batch"):
        teacher.stats(idx, 0.0)


def _config(**teacher) -> dict:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg = copy.deepcopy(cfg)
    cfg["students"]["augment"] = True
    cfg["teacher"].update(teacher)
    return cfg


def test_augmenting_students_never_read_a_cached_teacher_silently():
    spec = tasks.spec("image")
    with pytest.raises(ConfigError, match=r"teacher\.mode.*students\.augment"):
        C.check(_config(mode="cache"), "image")
    C.check(_config(mode="cache", allow_view_mismatch=True), "image")  # opted in: accepted
    C.check(_config(), "image")  # the default for augmenting students is online
    plan = Plan(_config(), spec)
    assert spec.teacher_mode(plan.config) == "online"
    assert plan.student_config("pd_end2")["teacher_mode"] == "online"
    assert plan.teacher_config()["mode"] == "online"
    assert "train" not in plan.teacher_splits  # no student reads a cached train split
    assert "store_train_members" not in plan.teacher_config()
    cached = Plan(_config(mode="cache", allow_view_mismatch=True), spec)
    assert "teacher_mode" not in cached.student_config("pd_end2")
    assert "train" in cached.teacher_splits and "mode" not in cached.teacher_config()
    plain = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert not plain["students"]["augment"] and spec.teacher_mode(plain) == "cache"
