"""pipeline.engine and what it is built from: optimisers and schedules (pipeline.optim),
devices (pipeline.device), checkpoints (pipeline.checkpoint)."""

import pytest
import torch

from pipeline import checkpoint as C
from pipeline import device, optim
from pipeline import engine as T
from pipeline.training import count_parameters


def test_optimizers_are_built_as_configured():
    m = torch.nn.Linear(2, 2)
    adamw = optim.make_optimizer(m, {"lr": 0.1, "weight_decay": 0.01})
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 0.01
    adam = optim.make_optimizer(m, {"optimizer": "adam", "lr": 0.1, "betas": [0.8, 0.9]})
    assert type(adam) is torch.optim.Adam and adam.defaults["betas"] == (0.8, 0.9)
    sgd = optim.make_optimizer(
        m, {"optimizer": "sgd", "lr": 0.1, "momentum": 0.5, "nesterov": True}
    )
    assert type(sgd) is torch.optim.SGD
    assert sgd.defaults["momentum"] == 0.5 and sgd.defaults["nesterov"] is True
    assert sgd.defaults["lr"] == 0.1
    with pytest.raises(ValueError, match="optimizer"):
        optim.make_optimizer(m, {"optimizer": "lion", "lr": 0.1})


def test_parameters_exempt_from_weight_decay_by_name():
    """The official ImageNet recipe's exemption: the residual blocks' batch-norm parameters."""
    from pipeline.tasks.image.models import build_model

    net = build_model({"name": "resnet50", "stem": "imagenet", "normalize": "imagenet"}, 10, 3)
    cfg = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-4,
           "no_weight_decay": [r"layer\d\.\d+\.bn\d\.(weight|bias)"]}  # fmt: skip
    sgd = optim.make_optimizer(net, cfg)
    decay, exempt = sgd.param_groups
    assert decay["weight_decay"] == 1e-4 and exempt["weight_decay"] == 0.0
    assert len(exempt["params"]) == 16 * 3 * 2  # 16 bottleneck blocks x 3 norms x 2
    assert len(decay["params"]) + len(exempt["params"]) == len(list(net.parameters()))
    names = {id(p): n for n, p in net.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} >= {"1.bn1.weight", "1.fc.bias"}
    assert "1.layer1.0.downsample.1.weight" in {names[id(p)] for p in decay["params"]}
    # one step: an exempt parameter is not decayed, a decayed one is
    with torch.no_grad():
        for p in net.parameters():
            p.grad = torch.zeros_like(p)
    before = [p.detach().clone() for p in (exempt["params"][0], decay["params"][0])]
    sgd.step()
    assert torch.equal(exempt["params"][0], before[0])
    assert not torch.equal(decay["params"][0], before[1])
    with pytest.raises(ValueError, match="find no parameter"):
        optim.make_optimizer(net, {**cfg, "no_weight_decay": ["bn_typo"]})


def test_schedules():
    m = torch.nn.Linear(2, 2)

    def lrs(cfg, steps=10):
        opt = optim.make_optimizer(m, {"optimizer": "sgd", "lr": 1.0})
        sched = optim.make_scheduler(opt, cfg, steps)
        out = []
        for _ in range(cfg["epochs"] * steps):
            out.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        return out

    multi = lrs({"epochs": 4, "schedule": "multistep", "milestones": [2]})
    assert multi[0] == 1.0 and multi[19] == 1.0 and multi[20] == pytest.approx(0.1)
    cosine = lrs({"epochs": 2, "schedule": "cosine"})
    assert cosine[0] == 1.0 and cosine[10] == pytest.approx(0.5) and cosine[-1] < 0.03
    warm = lrs({"epochs": 2, "schedule": "constant", "warmup_epochs": 1})
    assert warm[:3] == pytest.approx([0.1, 0.2, 0.3]) and warm[10:] == [1.0] * 10
    with pytest.raises(ValueError, match="schedule"):
        lrs({"epochs": 1, "schedule": "linear"})


def test_device_and_mixed_precision_choices():
    assert device.select_device("cpu").type == "cpu"
    assert optim.amp_enabled(torch.device("cuda"), {}) is True  # CUDA path decided without a GPU
    assert optim.amp_enabled(torch.device("cuda"), {"amp": False}) is False
    assert optim.amp_enabled(torch.device("cpu"), {"amp": True}) is False
    if not torch.cuda.is_available():
        assert device.select_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="CUDA is not available"):
            device.select_device("cuda")


def test_fit_checks_the_batcher_and_counts_parameters(tmp_path):
    model = torch.nn.Linear(3, 2)
    assert count_parameters(model) == 3 * 2 + 2
    x = torch.randn(10, 3)
    feed = T.Feed(10, lambda batches, g, seed: ((i, x[i]) for i in batches), lambda n, b, g: [])
    with pytest.raises(ValueError, match="batcher gave 0 batches, expected 3"):
        T.fit(
            model,
            feed,
            lambda z, i, e: z.sum(),
            {"epochs": 1, "batch_size": 4, "lr": 0.1},
            seed=0,
            ckpt_path=tmp_path / "c.pt",
            fp="x",
            log=lambda s: None,
        )


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_divergence_stops_loudly_and_keeps_the_last_good_checkpoint(tmp_path, where):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x = torch.randn(12, 3)
    feed = T.Feed(12, lambda batches, g, seed: ((i, x[i]) for i in batches))
    calls = {"n": 0}

    def loss_fn(z, idx, progress, x):
        calls["n"] += 1
        bad = int(progress) == 1 and calls["n"] == 5  # the second step of the second epoch
        if where == "loss":
            return z.sum() * (float("nan") if bad else 1.0)
        # bad: a finite loss (0) whose gradient is not (d sqrt(u)/du at u = 0)
        return (z - z.detach()).sum().abs().sqrt() if bad else z.pow(2).mean()

    cfg = {"epochs": 3, "batch_size": 4, "lr": 0.1, "grad_clip": 1.0}
    with pytest.raises(T.Diverged, match=r"epoch 2, step 2/3") as err:
        T.fit(model, feed, loss_fn, cfg, seed=0, ckpt_path=tmp_path / "c.pt", fp="x", log=print)
    assert ("loss is nan" if where == "loss" else "gradient norm is") in str(err.value)
    assert torch.load(tmp_path / "c.pt", weights_only=True)["epoch"] == 1  # the epoch before


def test_distillation_loss_values_on_a_cadence_and_divergence_on_every_step(tmp_path, eager):
    """``loss_value_every``: the loss value on the first step, every N-th and the last; the other
    steps take the float32 gradient alone, and a non-finite gradient there still stops the run."""
    from dataclasses import replace

    from pipeline.maths.losses import proxy_rkl_loss
    from pipeline.maths.stats import teacher_stats
    from pipeline.maths.values import active

    torch.manual_seed(0)
    k, n = 6, 20
    x = torch.randn(n, 3)
    stats = teacher_stats(torch.log_softmax(torch.randn(n, 3, k, dtype=torch.float64), -1))
    feed = T.Feed(n, lambda batches, g, seed: ((i, x[i]) for i in batches))
    seen = []

    def loss_fn(z, idx, progress, x):
        loss = proxy_rkl_loss(z, stats.index(idx), 1.0, 1.0)
        seen.append((active(), float(loss.detach()), len(idx)))
        return loss

    cfg = {"epochs": 1, "batch_size": 4, "lr": 0.1, "loss_value_every": 3}
    history = T.fit(
        torch.nn.Linear(3, k), feed, loss_fn, cfg, seed=0, ckpt_path=tmp_path / "c.pt", fp="x",
        log=lambda s: None,
    )  # fmt: skip
    assert [a for a, _, _ in seen] == [False, True, True, False, False]  # steps 0, 3 and 4 (last)
    assert all(v == 0.0 for a, v, _ in seen if a)  # placeholders
    valued = [(v, b) for a, v, b in seen if not a]
    assert all(v > 0 for v, _ in valued)
    want = sum(v * b for v, b in valued) / sum(b for _, b in valued)
    assert history[0]["train_loss"] == pytest.approx(want, rel=1e-12)

    bad = replace(stats, mean_probs=torch.full_like(stats.mean_probs, float("nan")))
    calls = []

    def bad_loss(z, idx, epoch, x):  # the second step (gradient only) goes wrong
        calls.append(active())
        return proxy_rkl_loss(z, (bad if len(calls) == 2 else stats).index(idx), 1.0, 1.0)

    cfg = {"epochs": 1, "batch_size": 1, "lr": 0.1, "loss_value_every": 1000}
    with pytest.raises(T.Diverged, match="the training loss gradient is nan at epoch 1, step 2/20"):
        T.fit(
            torch.nn.Linear(3, k), feed, bad_loss, cfg, seed=0, ckpt_path=tmp_path / "d.pt",
            fp="y", log=lambda s: None,
        )  # fmt: skip
    assert calls == [False, True]


def test_learning_curve_points_resume_and_leave_training_unchanged(tmp_path, monkeypatch):
    """``curve_every``: a point before the first step, every N-th step and each epoch's last;
    a run resumed from its epoch-1 checkpoint gives the same points, and the curve changes no
    weight (it draws no random numbers)."""
    torch.manual_seed(0)
    n, k = 10, 4
    x, y = torch.randn(n, 3), torch.randint(0, k, (n,))
    feed = T.Feed(n, lambda batches, g, seed: ((i, x[i]) for i in batches))

    def loss_fn(z, idx, progress, x):
        return torch.nn.functional.cross_entropy(z, y[idx])

    def curve_fn(model):
        assert not model.training and not torch.is_grad_enabled()
        return {"val_loss": float(loss_fn(model(x), torch.arange(n), 0, x))}

    def run(ckpt, curve_every, stop=None):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(3, k))
        cfg = {"epochs": 2, "batch_size": 3, "lr": 0.1, "curve_every": curve_every}
        points = []
        if stop:
            monkeypatch.setenv(T.STOP_AFTER_ENV, str(stop))
        try:
            T.fit(model, feed, loss_fn, cfg, seed=0, ckpt_path=ckpt, fp="x",
                  log=lambda s: None, curve_fn=curve_fn, curve=points)  # fmt: skip
        finally:
            monkeypatch.delenv(T.STOP_AFTER_ENV, raising=False)
        return model, points

    model, points = run(tmp_path / "a.pt", 2)
    # 4 steps per epoch: points at steps 0, 2, 4 (= epoch 1's last), 6, 8 (epoch 2's last)
    assert [(p["step"], p["epoch"], p["samples"]) for p in points] == [
        (0, 0, 0), (2, 1, 6), (4, 1, 10), (6, 2, 16), (8, 2, 20),
    ]  # fmt: skip
    assert points[-1]["val_loss"] < points[0]["val_loss"]
    plain, none = run(tmp_path / "b.pt", 0)
    assert none == []
    after, without = model.state_dict().values(), plain.state_dict().values()
    assert all(torch.equal(a, b) for a, b in zip(after, without, strict=True))
    with pytest.raises(T.Interrupted):
        run(tmp_path / "c.pt", 2, stop=1)
    _, resumed = run(tmp_path / "c.pt", 2)
    assert resumed == points


class _Stop(Exception):
    """A job killed between two steps (the test raises it from the loss)."""


def test_a_run_stopped_inside_an_epoch_resumes_there_to_the_uninterrupted_result(
    tmp_path, monkeypatch
):
    """With a checkpoint after every step (:data:`CHECKPOINT_MINUTES_ENV`), a run stopped in
    its second epoch resumes at the step reached, not at the epoch's start: it trains only the
    steps left, and its weights, history (timings aside) and learning curve equal an
    uninterrupted run's bit for bit, though the stream augments from the epoch's generator and
    the model draws dropout."""
    torch.manual_seed(0)
    n, k = 14, 4
    x, y = torch.randn(n, 3), torch.randint(0, k, (n,))

    def stream(batches, g, seed):  # augmentation drawn from the epoch's generator
        for i in batches:
            yield i, x[i] + 0.1 * torch.randn(len(i), 3, generator=g)

    feed = T.Feed(n, stream)
    trained = []  # (progress) of every step that reached the loss

    def run(ckpt, stop_at=None):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(3, k))

        def loss_fn(z, idx, progress, x):
            if stop_at is not None and len(trained) == stop_at:
                raise _Stop
            trained.append(progress)
            return torch.nn.functional.cross_entropy(z, y[idx])

        def curve_fn(m):
            return {"val_loss": float(torch.nn.functional.cross_entropy(m(x), y))}

        cfg = {"epochs": 3, "batch_size": 3, "lr": 0.1, "curve_every": 2}  # 5 steps an epoch
        points = []
        history = T.fit(model, feed, loss_fn, cfg, seed=0, ckpt_path=ckpt, fp="x",
                        log=lambda s: None, curve_fn=curve_fn, curve=points)  # fmt: skip
        timing = ("train_seconds", "seconds", "examples_per_s")
        return model, [{c: v for c, v in r.items() if c not in timing} for r in history], points

    monkeypatch.setenv(C.CHECKPOINT_MINUTES_ENV, "0")  # epoch checkpoints only
    clean, clean_history, clean_curve = run(tmp_path / "clean.pt")
    trained.clear()
    with pytest.raises(_Stop):
        run(tmp_path / "epochs.pt", stop_at=7)  # the third step of epoch 2
    assert torch.load(tmp_path / "epochs.pt", weights_only=True)["step"] == 0  # epoch 1's

    monkeypatch.setenv(C.CHECKPOINT_MINUTES_ENV, "1e-9")  # after every step
    trained.clear()
    with pytest.raises(_Stop):
        run(tmp_path / "steps.pt", stop_at=7)
    state = torch.load(tmp_path / "steps.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 2)  # two steps of epoch 2 done
    trained.clear()
    model, history, curve = run(tmp_path / "steps.pt")
    assert trained == [1 + s / 5 for s in (2, 3, 4)] + [2 + s / 5 for s in range(5)]
    assert history == clean_history and curve == clean_curve
    after, before = model.state_dict().values(), clean.state_dict().values()
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))


@pytest.mark.parametrize("value", ["-1", "ten", "nan"])
def test_a_bad_checkpoint_cadence_names_the_variable(tmp_path, monkeypatch, value):
    monkeypatch.setenv(C.CHECKPOINT_MINUTES_ENV, value)
    feed = T.Feed(4, lambda batches, g, seed: ((i, torch.ones(len(i), 3)) for i in batches))
    with pytest.raises(ValueError, match=rf"{C.CHECKPOINT_MINUTES_ENV}='{value}': must be"):
        T.fit(torch.nn.Linear(3, 2), feed, lambda z, i, e: z.sum(),
              {"epochs": 1, "batch_size": 2, "lr": 0.1}, seed=0, ckpt_path=tmp_path / "c.pt",
              fp="x", log=lambda s: None)  # fmt: skip
