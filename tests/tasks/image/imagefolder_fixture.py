"""A tiny generated ImageNet-style tree: train/val ImageFolders, an ImageNet-C layout, and
A/R/O-style folders holding a subset of the classes (so their class masks are exercised)."""

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["n01440764", "n01443537", "n01484850"]


def _image(rng, c: int, size: int) -> np.ndarray:
    img = rng.integers(0, 50, (size, size, 3))
    img[..., c] += 150  # class = dominant colour channel
    return img.clip(0, 255).astype(np.uint8)


def write_jpeg(img: np.ndarray, path: str) -> None:
    Image.fromarray(img).save(path, format="JPEG", quality=95)


def make_tree(root: Path, per_class: int = 8, size: int = 40) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    dirs = {}
    for split, n in (("train", per_class), ("val", per_class // 2)):
        for c, wnid in enumerate(CLASSES):
            d = root / split / wnid
            d.mkdir(parents=True)
            for i in range(n):
                write_jpeg(_image(rng, c, size + i % 5), str(d / f"{wnid}_{i}.JPEG"))
        dirs[split] = root / split
    for corruption in ("gaussian_noise", "contrast"):
        for sev in (1, 5):
            for c, wnid in enumerate(CLASSES):
                d = root / "imagenet-c" / corruption / str(sev) / wnid
                d.mkdir(parents=True)
                for i in range(2):
                    write_jpeg(_image(rng, c, size), str(d / f"{i}.JPEG"))
    dirs["c"] = root / "imagenet-c"
    for name in ("imagenet-a", "imagenet-o"):
        for c, wnid in enumerate(CLASSES[:2]):  # a 2-of-3 class subset -> class mask
            d = root / name / wnid
            d.mkdir(parents=True)
            for i in range(3):
                write_jpeg(
                    _image(rng, (c + 1) % 3 if name.endswith("o") else c, size),
                    str(d / f"{i}.JPEG"),
                )
        dirs[name] = root / name
    return dirs
