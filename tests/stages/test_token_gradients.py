"""Stage token_gradients (and the token task's diagnostic it runs, pipeline.tasks.text.gradients):
the gradient diagnostic on real (here: fake-corpus) validation tokens."""

import pytest
import torch

from pipeline import methods
from pipeline.errors import ConfigError
from pipeline.io import ArtifactError
from pipeline.maths.stats import teacher_stats
from pipeline.stages import token_gradients as G
from pipeline.stages.distill import distill
from pipeline.stages.train import train_member
from pipeline.tasks.text import corpus as TD
from pipeline.tasks.text import teacher as TT
from pipeline.tasks.text.model import load_lm
from tests.conftest import TEXT_CFG, fake_corpus

V = 20
STUDENT = {**TEXT_CFG, "epochs": 1, "curve_every": 4}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A fake corpus, two members, their teacher cache and two students (EnD; PD-EnD2 with
    m_off = 1 as a variant group)."""
    d = tmp_path_factory.mktemp("tokgrad")
    data = fake_corpus(d / "data")
    members = []
    for seed in (0, 1):
        members.append(d / f"m{seed}.safetensors")
        train_member("text", data, TEXT_CFG, seed, members[-1], d / f"m{seed}.pt", V, log=print)
    TT.build_teacher(data, V, members, d / "teacher")
    students = {}
    for group, method, options in (("end", "end", {}), ("pd_gate", "pd_end2", {})):
        cfg = {**STUDENT, "method": method, "options": options}
        if group != method:
            cfg["group"] = group
        students[group] = d / group / "model.safetensors"
        distill("text", data, d / "teacher", members, cfg, 0, students[group], d / f"{group}.pt",
                V, log=print)  # fmt: skip
    return d, data, members, students


def test_profile_and_gate_against_one_batch_of_every_val_token(trained):
    d, data, members, students = trained
    profile, gate = G.run("text", data, V, d / "teacher", members, students, sentences=12)
    assert list(profile.columns) == ["rank", "mean_prob", "end", "pd_gate"]
    assert len(profile) == V and profile["mean_prob"].is_monotonic_decreasing
    val = TD.load_sequences(data, "val", V)
    x = TT.trim(val["inputs"])
    loaded = [load_lm(p)[0] for p in members]
    with torch.no_grad():
        lp = torch.stack([torch.log_softmax(m(x).double(), -1) for m in loaded], 1)
    stats = teacher_stats(lp)
    top = stats.mean_probs.argmax(-1)
    for group, method in (("end", "end"), ("pd_gate", "pd_end2")):
        model = load_lm(students[group])[0]
        z = model(x).detach().double().requires_grad_(True)
        methods.loss(method, {}, z, stats, reduction="sum").backward()
        g = z.grad.abs()
        row = gate.set_index("group").loc[group]
        assert row["tokens"] == len(top) and row["method"] == method
        assert profile[group].iloc[0] == pytest.approx(float(g.gather(1, top[:, None]).mean()))
        assert profile[group].sum() == pytest.approx(
            float(g.sum(1).mean()), rel=1e-6
        )  # float32 stats
        below = float((z.detach().gather(1, top[:, None]) < 0).double().mean())
        assert row["top_class_below_zero"] == pytest.approx(below)
    assert gate.set_index("group").loc["pd_gate", "model_offset"] == 1.0


def test_a_student_of_another_group_or_v_is_refused(trained):
    d, data, members, students = trained
    with pytest.raises(ArtifactError, match="holds a end student, not pd_gate"):
        G.run("text", data, V, d / "teacher", members, {"pd_gate": students["end"]}, 4)
    with pytest.raises(ArtifactError, match="the teacher cache is for V=20, not 30"):
        G.run("text", data, 30, d / "teacher", members, {"end": students["end"]}, 4)


def test_a_task_without_the_diagnostic_is_refused(trained):
    d, data, members, students = trained
    with pytest.raises(ConfigError, match="a task with a real-data gradient diagnostic"):
        G.run("image", data, V, d / "teacher", members, students, 4)
