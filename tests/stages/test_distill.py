"""Stage distill on the image task: every method learns from the teacher cache."""

import pytest
import torch

from pipeline import methods
from pipeline.stages.distill import distill
from pipeline.tasks.image import cache as C
from tests.conftest import MEMBER_CFG

CFG = {**MEMBER_CFG, "epochs": 6}


@pytest.mark.parametrize("method", list(methods.METHODS))
def test_students_learn_from_the_cache(prepared, cache, members, tmp_path, method):
    options = {
        "end2": {
            "smoothing": 1e-3,
            "temperature": {"initial": 2.0, "hold_epochs": 1, "anneal_epochs": 1},
        }
    }.get(method, {})
    cfg = {**CFG, "method": method, "options": options}
    out, ckpt = tmp_path / "s.safetensors", tmp_path / "c.pt"
    hist = distill("image", prepared, cache, members, cfg, 0, out, ckpt, log=lambda s: None)
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in hist)
    # train_loss of annealed EnD2 mixes temperatures; val_loss is always at T = 1
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    if method != "pd_fkl":  # the unnormalised forward KL barely moves agreement (see docs)
        assert hist[-1]["val_agreement"] > hist[0]["val_agreement"] + 0.2
    assert (tmp_path / "history.csv").is_file()
    assert all(h["train_samples"] == 500 for h in hist)  # every train image once per epoch


def test_end2_annealing_needs_cached_members(prepared, cache, members, tmp_path, monkeypatch):
    load = C.load_split

    def without_members(cache_dir, split, **kw):
        return {k: v for k, v in load(cache_dir, split, **kw).items() if k != "member_log_probs"}

    monkeypatch.setattr(C, "load_split", without_members)
    opts = {"temperature": {"initial": 2.0, "hold_epochs": 1}}
    cfg = {**CFG, "method": "end2", "options": opts}
    with pytest.raises(ValueError, match="store_train_members"):
        distill("image", prepared, cache, members, cfg, 0, tmp_path / "s", tmp_path / "c.pt")


def test_bad_method_or_option_stops_before_training(prepared, cache, members, tmp_path):
    for method, options, match in (
        ("kd", {}, "unknown method 'kd'"),
        ("pd_end2", {"smoothing": 0.1}, "has no option"),
    ):
        cfg = {**CFG, "method": method, "options": options}
        with pytest.raises(ValueError, match=match):
            distill("image", prepared, cache, members, cfg, 0, tmp_path / "s", tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_cache_from_other_members_is_refused(prepared, cache, members, tmp_path):
    cfg = {**CFG, "method": "end", "options": {}}
    with pytest.raises(C.CacheMismatchError, match="other members"):
        distill("image", prepared, cache, members[:2], cfg, 0, tmp_path / "s", tmp_path / "c")


def test_init_bias_sets_the_last_linear_bias_to_the_teachers_log_marginal():
    from pipeline.stages.distill import init_output_bias

    class Teacher:
        def log_marginal(self):
            return torch.log(torch.tensor([0.5, 0.25, 0.25]))

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    first = model[0].bias.detach().clone()
    init_output_bias(model, Teacher())
    torch.testing.assert_close(model[2].bias.detach(), Teacher().log_marginal())
    assert torch.equal(model[0].bias.detach(), first)  # only the output layer
    with pytest.raises(ValueError, match=r"marginal of shape \(3,\) for the output bias \(5,\)"):
        init_output_bias(torch.nn.Linear(2, 5), Teacher())


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"options": {"init_bias": "log_marginal"}}, "students.init_bias"),
        ({"options": {}, "curve_every": 5}, "students.curve_every"),
    ],
)
def test_a_capability_the_task_lacks_is_refused_before_any_work(cfg, key, tmp_path):
    """The image task's teacher gives no class marginal and records no curve (its spec says
    so): the stage stops before it reads anything, naming the key."""
    from pipeline.errors import ConfigError
    from pipeline.stages.distill import distill

    with pytest.raises(ConfigError) as err:
        distill("image", tmp_path / "no", tmp_path / "no", [], {"method": "end", **cfg}, 0,
                tmp_path / "s.safetensors", tmp_path / "c.pt")  # fmt: skip
    assert err.value.key == key
