"""The image task's spec (torch-free): its splits, tables, figures and what it publishes."""

from __future__ import annotations

from pipeline.errors import ConfigError
from pipeline.figure_registry import Figure
from pipeline.tasks import Published, TaskSpec


def splits(config: dict) -> list[str]:
    """The prepared splits: train/val/test, the OOD sets, the shifted (corrupted) test images,
    and an ImageFolder config's own shift/OOD folders."""
    ood = config["ood"]
    folders = ood.get("folders") or {}  # imagefolder shift/OOD sets
    return (
        ["train", "val", "test"]
        + [f"ood_{name}" for name in ood.get("sets", [])]
        + (["shift"] if ood.get("corruptions") else [])
        + [f"ood_{n}" for n, f in folders.items() if f["kind"] == "ood"]
        + [f"shift_{n}" for n, f in folders.items() if f["kind"] == "shift"]
        + (["shift"] if any(f["kind"] == "corruptions" for f in folders.values()) else [])
    )


def teacher_mode(config: dict) -> str:
    """How the students' teacher runs: ``teacher.mode`` where set, else ``online`` when the
    students augment (the members must see the student's view) and ``cache`` when they do not
    (faster, and exact there)."""
    mode = (config.get("teacher") or {}).get("mode")
    if mode is not None:
        return mode
    return "online" if (config.get("students") or {}).get("augment") else "cache"


def teacher_splits(config: dict) -> list[str]:
    """The splits the teacher cache holds: every prepared split, without ``train`` when the
    teacher runs online (no student reads its cached statistics then)."""
    return [s for s in splits(config) if s != "train" or teacher_mode(config) == "cache"]


def check(config: dict) -> None:
    """Corruptions need at least one severity; augmenting students need an online teacher
    unless the view mismatch of a cached one is accepted explicitly."""
    ood = config.get("ood") or {}
    if ood.get("corruptions") and not ood.get("severities", [1]):
        raise ConfigError("ood.severities", [], "at least one severity in 1..5 with corruptions")
    teacher = config.get("teacher") or {}
    augment = bool((config.get("students") or {}).get("augment"))
    if augment and teacher_mode(config) == "cache" and not teacher.get("allow_view_mismatch"):
        raise ConfigError(
            "teacher.mode",
            "cache",
            "online: students.augment is true, so a cached teacher (the members' outputs on the "
            "un-augmented images) would answer for another view than the student's crop or "
            "flip; set teacher.mode: online, students.augment: false, or accept the mismatch "
            "with teacher.allow_view_mismatch: true (docs/image_task.md)",
        )


SPEC = TaskSpec(
    name="image",
    schema="config.schema.yaml",
    sweeps_classes=False,
    raw_inputs=lambda config: [],
    data_splits=splits,
    teacher_splits=teacher_splits,
    arrays="per_example.safetensors",
    tables={
        name: ("csv", "md", "tex")
        for name in ("main", "prr", "ood", "shift", "shift_sets", "diversity")
    },
    figures=(
        Figure("rejection_curves", "rejection_curves", ("per_example",)),
        Figure("ood_histograms", "ood_histograms", ("per_example",)),
        Figure("ood_examples", "ood_examples", ("per_example", "data_manifest")),
        Figure("reliability", "reliability", ("per_example",), ("ece_bins",)),
        Figure("shift", "shift", ("tidy",)),
        Figure("training_curves", "training_curves", ("histories",)),
        Figure("knowledge_scatter", "knowledge_scatter", ("per_example",)),
        Figure("gradient_analysis", "gradient_analysis", ("shares", "profile")),
    ),
    palette_from="tidy",
    published=Published(
        tables={
            "main": "Test set (in-distribution): accuracy, NLL, Brier score, ECE.",
            "ood": "OOD detection ROC-AUC per uncertainty measure (OOD positive): "
            "Fashion-MNIST test vs MNIST digits, vs the test images with inverted intensities "
            "and vs the severity-5 corrupted test images (shift s5).",
            "diversity": "Ensemble diversity per set: the members' mean pairwise "
            "disagreement (share of images on which two members' top classes differ) and "
            "the mean RMI (knowledge uncertainty) of the ensemble and of each Dirichlet "
            "student; shift sN: the corrupted test images at severity N.",
            "prr": "Misclassification detection: prediction rejection ratio per measure "
            "(1 = oracle, 0 = random).",
            "shift": "Accuracy and ECE per corruption severity (s1..s5), mean over "
            "corruption types.",
        },
        figures=(
            "ood_histograms",
            "ood_examples",
            "rejection_curves",
            "shift",
            "gradient_analysis",
        ),
        marker="results",
        doc="results.md",
    ),
    check=check,
    teacher_mode=teacher_mode,
    shared_prediction=True,
    cached_teacher=True,
)
