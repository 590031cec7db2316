"""Model registry: name -> ``nn.Module`` producing logits ``[B, K]``.

* ``small_cnn``: three conv blocks + linear head, sized for 2 CPU cores. ``pool`` is the side
  of the average pool before the head: 1 (global average pooling; width 16: 24k parameters) or
  7 (the 7x7 map of a 28x28 input kept: width 16, 55k parameters, ~1,600 train images/s on
  one core, 91-92 % Fashion-MNIST test accuracy in 3 epochs, where pool 1 reaches ~88 %).
* ``resnet18`` / ``resnet50``: torchvision ResNets (no pretrained weights, ``zero_init_residual``),
  with ``stem="small"`` (3x3 stride-1 conv, no max-pool) for 28-32 px images or ``"imagenet"``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


class SmallCNN(nn.Module):
    """conv(w)-pool-conv(2w)-pool-conv(4w)-avg-pool(pool x pool)-linear, every conv followed
    by batch norm and ReLU. Input ``[B, C, H, W]``, output logits ``[B, num_classes]``."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        width: int = 16,
        dropout: float = 0.0,
        pool: int = 1,
    ):
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.features = nn.Sequential(
            *block(in_channels, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(pool),
            nn.Flatten(),
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(4 * width * pool * pool, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def _resnet(arch: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_channels: int = 3, stem: str = "imagenet") -> nn.Module:
        import torchvision

        model = getattr(torchvision.models, arch)(
            weights=None, num_classes=num_classes, zero_init_residual=True
        )
        if stem == "small":
            model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            model.maxpool = nn.Identity()
        elif stem == "imagenet":
            if in_channels != 3:
                model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        else:
            raise ValueError(f"stem must be 'small' or 'imagenet', got {stem!r}")
        return model

    return build


MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN,
    "resnet18": _resnet("resnet18"),
    "resnet50": _resnet("resnet50"),
}


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel (ImageNet statistics), as the network's first layer."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


NORMALIZATIONS = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


def build_model(cfg: dict, num_classes: int, in_channels: int) -> nn.Module:
    """Build ``cfg["name"]`` with the remaining keys of ``cfg`` as keyword arguments;
    ``normalize: imagenet`` prepends a :class:`Normalize` layer."""
    kwargs = {k: v for k, v in cfg.items() if k not in ("name", "normalize")}
    name = cfg.get("name")
    if name not in MODELS:
        raise ValueError(f"model.name {name!r} is not registered; choose from {sorted(MODELS)}")
    try:
        model = MODELS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
    except TypeError as err:
        raise ValueError(f"bad options for model {name!r}: {err}") from err
    norm = cfg.get("normalize")
    if norm is None:
        return model
    if norm not in NORMALIZATIONS:
        raise ValueError(f"model.normalize must be one of {sorted(NORMALIZATIONS)}, got {norm!r}")
    return nn.Sequential(Normalize(*NORMALIZATIONS[norm]), model)


def load_trained(path: str | Path) -> tuple[nn.Module, dict]:
    """A model saved by :func:`pipeline.io.save_model` (weights + JSON metadata beside them),
    rebuilt from its recorded config and returned in eval mode with that metadata; verified by
    :func:`pipeline.io.load_weights`."""
    from pipeline.io import load_weights

    state, meta = load_weights(path)
    model = build_model(meta["config"]["model"], int(meta["num_classes"]), int(meta["in_channels"]))
    model.load_state_dict(state)
    return model.eval(), meta
