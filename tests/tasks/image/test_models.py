import pytest
import torch

from pipeline.tasks.image.models import MODELS, build_model, load_trained
from pipeline.training import count_parameters


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registry_builds_models_with_k_outputs(name):
    cfg = {"name": name} if name == "small_cnn" else {"name": name, "stem": "small"}
    model = build_model(cfg, num_classes=7, in_channels=1).train()
    out = model(torch.rand(4, 1, 28, 28))
    assert out.shape == (4, 7)
    out.logsumexp(-1).sum().backward()  # every parameter is trained
    assert all(p.grad is not None for p in model.parameters())


def test_small_cnn_width_and_seeded_init():
    torch.manual_seed(0)
    a = build_model({"name": "small_cnn", "width": 8}, 10, 1)
    torch.manual_seed(0)
    b = build_model({"name": "small_cnn", "width": 8}, 10, 1)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert count_parameters(a) < count_parameters(
        build_model({"name": "small_cnn", "width": 16}, 10, 1)
    )


def test_small_cnn_pool_keeps_a_spatial_map_before_the_head():
    glob_pool = build_model({"name": "small_cnn", "width": 16}, 10, 1)
    pooled = build_model({"name": "small_cnn", "width": 16, "pool": 7}, 10, 1)
    assert glob_pool.head.in_features == 64 and pooled.head.in_features == 64 * 49
    assert count_parameters(pooled) - count_parameters(glob_pool) == 64 * 48 * 10
    assert pooled(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_bad_model_config_is_named():
    with pytest.raises(ValueError, match="model.name 'vgg'"):
        build_model({"name": "vgg"}, 10, 1)
    with pytest.raises(ValueError, match="bad options for model 'small_cnn'"):
        build_model({"name": "small_cnn", "depth": 3}, 10, 1)


def test_trained_model_reloads_from_its_metadata(tmp_path):
    from pipeline.io import save_model

    torch.manual_seed(0)
    cfg = {"name": "small_cnn", "width": 4}
    model = build_model(cfg, 5, 1).eval()
    save_model(
        model,
        tmp_path / "m.safetensors",
        {"num_classes": 5, "in_channels": 1, "config": {"model": cfg}},
    )
    again, meta = load_trained(tmp_path / "m.safetensors")
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(again(x), model(x)) and not again.training
    assert meta["num_classes"] == 5 and "weights_sha256" in meta
