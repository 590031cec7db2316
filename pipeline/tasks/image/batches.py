"""How image batches reach a network: index batches -> uint8 images -> float inputs, the
training augmentation, and batched prediction (in-memory tensors or file-backed ImageFolder sets).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline import distributed as D
from pipeline.device import CPU
from pipeline.engine import Feed
from pipeline.progress import Progress


def iterate_batches(
    images,
    batches: list[torch.Tensor],
    *,
    train: bool = False,
    seed: int = 0,
    workers: int = 0,
    pin: bool = False,
):
    """``(idx, uint8 images)`` for each index batch: slices of an in-memory tensor, or images
    decoded by DataLoader workers (training transform when ``train``) for file-backed sets."""
    if isinstance(images, torch.Tensor):
        for idx in batches:
            yield idx, images[idx]
    else:
        yield from images.batches(batches, train=train, seed=seed, workers=workers, pin=pin)


def channels(images) -> int:
    """Colour channels of an image set: ``[N, H, W]`` is grey (1), ``[N, C, H, W]`` has C."""
    return 1 if images.ndim == 3 else int(images.shape[1])


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, H, W]`` -> float ``[N, 1, H, W]`` in [0, 1] (``[N, C, H, W]`` passes through)."""
    x = images.float() / 255.0
    return x.unsqueeze(1) if x.ndim == 3 else x


def augment(x: torch.Tensor, g: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random per-image horizontal flips and a per-batch translation of ``[B, C, H, W]``."""
    flip = torch.rand(x.shape[0], generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if max_shift:
        dx, dy = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=g))
        x = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
        if dy:
            x[..., (slice(0, dy) if dy > 0 else slice(dy, None)), :] = 0
        if dx:
            x[..., (slice(0, dx) if dx > 0 else slice(dx, None))] = 0
    return x


def make_feed(images, cfg: dict, device: torch.device) -> Feed:
    """The :class:`pipeline.engine.Feed` of uint8 ``images`` under the training config ``cfg``:
    random flips and shifts when ``augment`` (drawn from the epoch's generator after its
    permutation; file-backed images are augmented while decoded), ``workers`` DataLoader
    workers for file-backed sets, page-locked memory when training on CUDA."""
    aug, workers = bool(cfg.get("augment", False)), int(cfg.get("workers", 0))
    in_memory = isinstance(images, torch.Tensor)
    pin = device.type == "cuda"
    if pin and in_memory:  # page-locked: asynchronous copies to the GPU
        images = images.pin_memory()

    def stream(batches, g, epoch_seed):
        for idx, xb in iterate_batches(
            images, batches, train=aug, seed=epoch_seed, workers=workers, pin=pin
        ):
            x = to_float(xb)
            if aug and in_memory:
                x = augment(x, g)
            yield idx, x

    return Feed(int(images.shape[0]), stream)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images,
    device: torch.device = CPU,
    batch_size: int = 1024,
    workers: int = 0,
    progress: Progress | None = None,
) -> torch.Tensor:
    """float32 logits ``[N, K]`` of ``model`` (eval mode) over uint8 ``images [N, ...]`` or a
    file-backed image set (decoded by ``workers`` DataLoader workers); ``progress`` counts the
    images. In a data-parallel job the batches are dealt over the ranks and the logits gathered
    on every rank, identical to one process's."""
    model.eval().to(device)
    n = images.shape[0]
    batches = [torch.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    mine = D.deal(batches)  # a data-parallel job splits the batches over its ranks
    out = []
    for _, xb in iterate_batches(images, mine, workers=workers, pin=device.type == "cuda"):
        out.append(model(to_float(xb).to(device, non_blocking=True)).float().cpu())
        if progress is not None:
            progress.update(len(xb) * D.sharing())  # rank 0 counts for every rank
    return torch.cat(D.gather_dealt(out, len(batches)))


def predict_log_probs(
    model: nn.Module,
    images,
    device: torch.device = CPU,
    batch_size: int = 1024,
    workers: int = 0,
    progress: Progress | None = None,
) -> torch.Tensor:
    """float32 log-softmax ``[N, K]``: :func:`predict_logits` normalised."""
    logits = predict_logits(model, images, device, batch_size, workers, progress)
    return torch.log_softmax(logits, -1)
