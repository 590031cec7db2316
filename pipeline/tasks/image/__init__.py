"""The image classification task: Fashion-MNIST (embedded default) and ImageFolder datasets
(ImageNet and its shift/OOD sets), CNN/ResNet members and students, a teacher cache of sufficient
statistics. The interface functions are documented in :mod:`pipeline.tasks`.

* :mod:`.data`         loaders, deterministic splits, corruptions, the prepared-data store
* :mod:`.imagefolder`  images kept on disk (paper-scale configs)
* :mod:`.models`       the model registry (small CNN, torchvision ResNets)
* :mod:`.batches`      batching, augmentation, batched prediction
* :mod:`.cache`        the teacher cache and what a student reads from it
* :mod:`.evaluation`   per-example predictions and metrics of one system
* :mod:`.summary`      the summary tables
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from pipeline.tasks import INTERFACE

if TYPE_CHECKING:
    import torch

    from pipeline.engine import TrainingSet

__all__ = [*INTERFACE]
# Each function imports the implementation it needs inside its body: the workflow follows those
# imports per stage (pipeline.imports.stage_closure), so an edit reruns only the stages it touches.
# Importing this package imports no torch (its spec module is read while the DAG is built).


def prepare(cfg: dict, out: str | Path) -> dict:
    from pipeline.tasks.image.data import prepare

    return prepare(cfg, out)


def describe(manifest: dict) -> str:
    return "\n".join(
        f"{split:12s} n={entry['n']:6d} shape={entry['shape']}"
        for split, entry in manifest["splits"].items()
    )


def _fixed_classes(num_classes: int | None) -> None:
    if num_classes is not None:
        raise ValueError("the image task takes its number of classes from the data")


def training_set(
    data_dir: str | Path, cfg: dict, num_classes: int | None, device: torch.device
) -> TrainingSet:
    """The prepared ``train`` split (and ``val``) under the training config ``cfg``."""
    from pipeline.engine import TrainingSet
    from pipeline.tasks.image.batches import channels, make_feed
    from pipeline.tasks.image.data import load_manifest, load_split

    _fixed_classes(num_classes)
    manifest = load_manifest(data_dir)
    train = load_split(data_dir, "train")
    val = load_split(data_dir, "val")
    labels = train["labels"].to(device)
    sha = manifest["splits"]["train"]["sha256"]
    return TrainingSet(
        feed=make_feed(train["images"], cfg, device),
        inputs=train["images"],
        targets=lambda idx: labels[idx.to(device)],
        info={
            "num_classes": int(manifest["num_classes"]),
            "in_channels": channels(train["images"]),
        },
        fp_inputs={"data": sha},
        data_sha256=sha,
        val={
            "images": val["images"],
            "labels": val["labels"],
            "workers": int(cfg.get("workers", 0)),
        },
        about=f"model={cfg['model']} n_train={len(train['labels'])}",
        data_dir=Path(data_dir),
    )


def build_model(model_cfg: dict, info: dict) -> torch.nn.Module:
    from pipeline.tasks.image.models import build_model

    return build_model(model_cfg, int(info["num_classes"]), int(info["in_channels"]))


def load_model(path: str | Path) -> tuple[torch.nn.Module, dict]:
    from pipeline.tasks.image.models import load_trained

    return load_trained(path)


def validate(model: torch.nn.Module, ts: TrainingSet, device: torch.device) -> dict[str, float]:
    """Accuracy and NLL of a member on the val split."""
    from pipeline.maths import metrics
    from pipeline.tasks.image.batches import predict_log_probs

    lp = predict_log_probs(model, ts.val["images"], device, workers=ts.val["workers"])
    p = lp.exp().double()
    y = ts.val["labels"]
    return {"val_acc": metrics.accuracy(p, y), "val_nll": metrics.nll(p, y)}


def build_teacher(data_dir, member_files, seeds, out, cfg, num_classes, log=print):
    """The teacher cache (:func:`.cache.build_cache`); samples = examples x members."""
    from pipeline.tasks.image.cache import build_cache

    _fixed_classes(num_classes)
    manifest = build_cache(data_dir, member_files, seeds, out, cfg, log=log)
    return manifest, sum(e["n"] for e in manifest["splits"].values()) * len(member_files)


def student_teacher(teacher_dir, member_files, ts: TrainingSet, method, options, device, cfg):
    """What a student learns from (``cfg["teacher_mode"]``, :func:`.spec.teacher_mode`): the
    members run on the student's own batch (:class:`.online.OnlineTeacher`, ``online``), or the
    statistics cached from the un-augmented images (:class:`.cache.CachedTeacher`, the default).
    Either is checked against the run's cache, data and members."""
    args = (teacher_dir, ts.data_dir, member_files, ts.val, method, options, device)
    mode = cfg.get("teacher_mode", "cache")
    if mode == "online":
        from pipeline.optim import amp_enabled
        from pipeline.tasks.image.online import OnlineTeacher

        return OnlineTeacher(*args, ts.val["workers"], amp=amp_enabled(device, cfg))
    if mode != "cache":
        raise ValueError(f"teacher_mode must be 'online' or 'cache', got {mode!r}")
    from pipeline.tasks.image.cache import CachedTeacher

    return CachedTeacher(*args, ts.val["workers"])


def evaluate_system(group, seed, data_dir, teacher_dir, model, meta, cfg, num_classes, device):
    """Metric rows and per-example arrays of one system (:mod:`.evaluation`)."""
    from pipeline.tasks.image.evaluation import evaluate_system

    _fixed_classes(num_classes)
    return evaluate_system(group, seed, data_dir, teacher_dir, model, meta, cfg, device)


def tables(tidy, histories=None):
    """The summary tables (:mod:`.summary`)."""
    from pipeline.tasks.image.summary import tables

    return tables(tidy, histories)


def figure_module() -> ModuleType:
    """The figure functions its spec's registry names (:mod:`.figures`)."""
    from pipeline.tasks.image import figures

    return figures
