"""ImageFolder-style datasets for the paper-scale configs (ImageNet and its shift/OOD sets).

Unlike the embedded datasets, images stay on disk: prepared splits store labels, ids and paths
(``<split>.safetensors`` + ``<split>.paths.json``); :class:`FileImages` decodes them on the fly
in DataLoader workers, with ``RandomResizedCrop`` + flip for training (seeded per image and
epoch, so training stays deterministic and resumable) and resize + centre crop for evaluation.

Layouts (as published):
  * ``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG`` (val sorted into class folders);
  * ImageNet-C: ``<root>/<corruption>/<severity>/<wnid>/*.JPEG``;
  * ImageNet-A / -R / -O: ``<root>/<wnid>/*``, 200 of the 1000 classes each: their class mask
    (the class indices present) is stored with the split, and evaluation restricts the
    model's output to it, as in Hendrycks et al.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from pipeline.errors import ConfigError
from pipeline.io import ArtifactError, atomic_save, atomic_write_text, fingerprint, read_json

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp")


def scan(
    root: str | Path, classes: list[str] | None = None
) -> tuple[list[str], list[int], list[str]]:
    """Relative paths and labels of ``root/<class>/<image>``; ``classes`` fixes the label order
    (those of the training set); folders of unknown classes are an error."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    found = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not found:
        raise ValueError(f"{root} has no class sub-folders")
    classes = found if classes is None else classes
    index = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in found if c not in index]
    if unknown:
        raise ValueError(f"{root} has class folders that are not training classes: {unknown[:5]}")
    paths, labels = [], []
    for c in found:
        for f in sorted(os.listdir(root / c)):
            if f.lower().endswith(IMAGE_EXTENSIONS):
                paths.append(f"{c}/{f}")
                labels.append(index[c])
    if not paths:
        raise ValueError(f"{root} has no images")
    return paths, labels, classes


class FileImages:
    """Images on disk behaving like the uint8 ``[N, 3, S, S]`` tensors of the embedded datasets:
    ``len``, ``shape``, ``ndim``, ``[idx]`` (evaluation transform), :meth:`subset`, and
    :meth:`batches` (DataLoader with workers, training transform optional)."""

    def __init__(self, root: str | Path, paths: list[str], size: int = 224, resize: int = 256):
        self.root, self.paths, self.size, self.resize = Path(root), list(paths), size, resize

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), 3, self.size, self.size)

    @property
    def ndim(self) -> int:
        return 4

    def load(self, i: int, train: bool = False, seed: int = 0) -> torch.Tensor:
        """Image ``i`` as uint8 ``[3, S, S]``."""
        path = self.root / self.paths[i]
        try:
            with Image.open(path) as im:
                img = TF.pil_to_tensor(im.convert("RGB"))  # uint8 [3, H, W]
        except (OSError, SyntaxError, ValueError) as err:  # PIL: missing, truncated, not an image
            raise ArtifactError(
                path, f"cannot be decoded as an image ({err})", "prepare_data"
            ) from err
        if not train:
            img = TF.resize(img, [self.resize], antialias=True)
            return TF.center_crop(img, [self.size, self.size])
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        h, w = img.shape[-2:]
        for _ in range(10):  # RandomResizedCrop(scale=(0.08, 1), ratio=(3/4, 4/3)), seeded
            area = h * w * float(torch.empty(1).uniform_(0.08, 1.0, generator=g))
            log_r = torch.empty(1).uniform_(-0.2877, 0.2877, generator=g)  # ln(3/4), ln(4/3)
            ratio = float(torch.exp(log_r))
            cw, ch = round((area * ratio) ** 0.5), round((area / ratio) ** 0.5)
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
                left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
                break
        else:
            ch, cw = min(h, w), min(h, w)
            top, left = (h - ch) // 2, (w - cw) // 2
        img = TF.resized_crop(img, top, left, ch, cw, [self.size, self.size], antialias=True)
        if float(torch.rand(1, generator=g)) < 0.5:
            img = TF.horizontal_flip(img)
        return img

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, slice):
            idx = range(*idx.indices(len(self)))
        return torch.stack([self.load(int(i)) for i in idx])

    def subset(self, idx: Iterable[int]) -> FileImages:
        return FileImages(self.root, [self.paths[int(i)] for i in idx], self.size, self.resize)

    def batches(
        self,
        batches: list[torch.Tensor],
        *,
        train: bool = False,
        seed: int = 0,
        workers: int = 0,
        pin: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(idx, images)`` per batch of indices, decoded by ``workers`` DataLoader workers."""
        loader = torch.utils.data.DataLoader(
            _Items(self, train, seed),
            batch_sampler=[b.tolist() for b in batches],
            num_workers=workers,
            pin_memory=pin,
            collate_fn=_collate,
            persistent_workers=False,
        )
        yield from loader


class _Items(torch.utils.data.Dataset):
    def __init__(self, images: FileImages, train: bool, seed: int):
        self.images, self.train, self.seed = images, train, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return i, self.images.load(i, self.train, self.seed)


def _collate(items):
    idx, imgs = zip(*items, strict=True)
    return torch.tensor(idx), torch.stack(imgs)


def prepare(cfg: dict, out_dir: str | Path) -> dict:
    """Write file-list splits and a manifest for an ImageFolder dataset.

    ``cfg["dataset"]``: ``train_dir``, ``val_dir``, ``image_size``, ``resize``, ``val_size``
    (carved from train for model selection), ``train_size`` (null = all), ``test_size``,
    ``split_seed``. ``cfg["ood"]["folders"]``: name -> ``{dir, kind}`` with kind ``ood``
    (OOD detection, e.g. ImageNet-O), ``shift`` (labelled, e.g. ImageNet-A/-R) or
    ``corruptions`` (ImageNet-C layout); sets with fewer classes than training get a class mask.
    """
    ds = cfg["dataset"]
    out = Path(out_dir)
    train_paths, train_labels, classes = scan(ds["train_dir"])
    g = torch.Generator().manual_seed(int(ds["split_seed"]))
    perm = torch.randperm(len(train_paths), generator=g)
    n_val = int(ds["val_size"])
    if n_val >= len(perm):
        raise ConfigError(
            "dataset.val_size", n_val, f"fewer than the {len(perm)} images of {ds['train_dir']}"
        )
    n_train = len(perm) - n_val if ds.get("train_size") is None else int(ds["train_size"])
    n_train = min(n_train, len(perm) - n_val)
    roots, splits = {}, {}

    def add(name, root, paths, labels, ids, extra=None, mask=None):
        roots[name] = str(Path(root).resolve())
        splits[name] = (
            paths,
            torch.tensor(labels, dtype=torch.int64),
            torch.tensor(ids, dtype=torch.int64),
            extra or {},
            mask,
        )

    for name, pick in (("train", perm[n_val : n_val + n_train]), ("val", perm[:n_val])):
        pick = pick.tolist()
        add(
            name,
            ds["train_dir"],
            [train_paths[i] for i in pick],
            [train_labels[i] for i in pick],
            pick,
        )
    paths, labels, _ = scan(ds["val_dir"], classes)
    take = torch.randperm(len(paths), generator=g)[: ds.get("test_size") or len(paths)].tolist()
    take.sort()
    add("test", ds["val_dir"], [paths[i] for i in take], [labels[i] for i in take], take)
    corruption_names = []
    for name, spec in (cfg.get("ood", {}).get("folders") or {}).items():
        kind, root = spec["kind"], Path(spec["dir"])
        if kind == "corruptions":
            p_all, l_all, c_all, s_all = [], [], [], []
            for ci, corruption in enumerate(sorted(d.name for d in root.iterdir() if d.is_dir())):
                corruption_names.append(corruption)
                for sev_dir in sorted((root / corruption).iterdir()):
                    p, lab, _ = scan(sev_dir, classes)
                    p_all += [f"{corruption}/{sev_dir.name}/{x}" for x in p]
                    l_all += lab
                    c_all += [ci] * len(p)
                    s_all += [int(sev_dir.name)] * len(p)
            extra = {"corruption": torch.tensor(c_all), "severity": torch.tensor(s_all)}
            add("shift", root, p_all, l_all, list(range(len(p_all))), extra)
            continue
        paths, labels, _ = scan(root, classes)
        present = sorted(set(labels))
        mask = present if len(present) < len(classes) else None
        split = f"ood_{name}" if kind == "ood" else f"shift_{name}"
        add(split, root, paths, labels, list(range(len(paths))), mask=mask)
    manifest = {
        "dataset": ds.get("name", "imagefolder"),
        "storage": "files",
        "num_classes": len(classes),
        "class_names": classes,
        "image_size": int(ds.get("image_size", 224)),
        "resize": int(ds.get("resize", 256)),
        "corruptions": corruption_names,
        "config": cfg,
        "splits": {},
    }
    for name, (paths, labels, ids, extra, mask) in splits.items():
        path = out / f"{name}.safetensors"
        atomic_save({"labels": labels, "ids": ids, **extra}, path)
        atomic_write_text(json.dumps(paths), out / f"{name}.paths.json")
        manifest["splits"][name] = {
            "file": path.name,
            "root": roots[name],
            "n": len(paths),
            "shape": [len(paths), 3, manifest["image_size"], manifest["image_size"]],
            "class_counts": torch.bincount(labels, minlength=len(classes)).tolist(),
            "class_mask": mask,
            "sha256": fingerprint({"paths": paths, "labels": labels.tolist()}),
            "sizes_sha256": fingerprint(_sizes(roots[name], paths)),
        }
    atomic_write_text(json.dumps(manifest, indent=2), out / "manifest.json")
    return manifest


def _sizes(root: str | Path, paths: list[str]) -> list[int]:
    return [os.path.getsize(Path(root) / p) for p in paths]


def open_images(
    data_dir: str | Path, split: str, manifest: dict, verify: bool = True
) -> FileImages:
    """The images of ``split``; with ``verify`` every file must still have the byte size recorded
    when the split was prepared (one ``stat`` per image: hashing ImageNet's 150 GB on every load
    is not affordable; a same-size corruption surfaces when the image is decoded)."""
    entry = manifest["splits"][split]
    paths = read_json(Path(data_dir) / f"{split}.paths.json", "prepare_data")
    if verify:
        try:
            sizes = fingerprint(_sizes(entry["root"], paths))
        except OSError as err:
            raise ArtifactError(
                err.filename, "an image of the prepared split is missing", "prepare_data"
            ) from err
        if sizes != entry.get("sizes_sha256"):
            raise ArtifactError(
                entry["root"],
                f"images of split {split!r} changed size since the split was prepared",
                "prepare_data",
            )
    return FileImages(entry["root"], paths, manifest["image_size"], manifest["resize"])
