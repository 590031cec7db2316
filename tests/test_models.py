import pytest
import torch

from pipeline.models import MODELS, build_model, count_parameters


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registry_builds_models_with_k_outputs(name):
    cfg = {"name": name} if name == "small_cnn" else {"name": name, "stem": "small"}
    model = build_model(cfg, num_classes=7, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 7)
    assert count_parameters(model) > 0


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


def test_bad_model_config_is_named():
    with pytest.raises(ValueError, match="model.name 'vgg'"):
        build_model({"name": "vgg"}, 10, 1)
    with pytest.raises(ValueError, match="bad options for model 'small_cnn'"):
        build_model({"name": "small_cnn", "depth": 3}, 10, 1)
