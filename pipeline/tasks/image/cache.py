"""The image task's teacher artifact (``rule cache_teacher``): every member run once over every
split, stored as the sufficient statistics of every loss (no member axis for ``train``).

Per split, ``<split>.safetensors`` holds
  * ``mean_probs``, ``log_gap``, ``floored_log_gap`` ``[N, K]`` in the configured dtype
    (float16 by default): pi_bar and the two mean log-probs (exact and ``ln(pi + eps)``) as gaps
    to ``ln(pi_bar + eps)`` (:func:`encode_stats`) — the sufficient statistics of every loss;
  * ``rmi`` and ``data_uncertainty`` (mean member entropy) ``[N]`` float32, computed in float64
    from the members, so the proxy target and every ensemble uncertainty measure are exact
    without the member axis;
  * ``member_log_probs`` ``[N, M, K]``: float32 for the evaluation splits (single-member and
    ensemble metrics) and, in the cache dtype, for ``train`` when configured (EnD2 temperature
    annealing and smoothing need them);
  * ``labels``, ``ids``.
``manifest.json`` records N, K, M, member ids, sha256 of every member file and cache file, the
data manifest's checksum, sizes on disk and the size a naive float32 ``[N, M, K]`` store would
take. :func:`load_split` rejects a cache that does not match its data or members.

Run by hand through the teacher stage::

    python -m pipeline.stages.teacher --task image --data results/default/data \
        --members m0.safetensors m1.safetensors --seeds 0 1 --out results/default/teacher \
        --config-json '{"dtype": "float16"}'
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline import __version__, distributed, methods
from pipeline.device import select_device
from pipeline.imports import code_fingerprint
from pipeline.io import (
    ArtifactError,
    atomic_save,
    atomic_write_text,
    fingerprint,
    read_json,
    read_tensors,
    sha256_file,
)
from pipeline.maths import metrics as Mx
from pipeline.maths.dirichlet import EPS
from pipeline.maths.stats import TeacherStats, teacher_stats
from pipeline.progress import JOB, Progress
from pipeline.tasks.image import data as D
from pipeline.tasks.image.batches import predict_log_probs, predict_logits
from pipeline.tasks.image.models import load_trained

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
EVAL_ONLY_SPLITS = ("test",)  # plus every ood_* and shift split


RULE = "cache_teacher"


class CacheMismatchError(ArtifactError):
    """The cache was built from other data or other members, or is corrupt: it must be rebuilt
    (``rule cache_teacher``)."""

    def __init__(self, path, problem: str):
        super().__init__(path, problem, "cache_teacher")


def _check_finite(finite: torch.Tensor, member_files: list, where: str) -> None:
    """``finite [M]`` bool: a member whose outputs hold NaN or inf (a diverged or corrupt model)
    never becomes a teacher."""
    for ok, path in zip(finite.tolist(), member_files, strict=True):
        if not ok:
            raise ArtifactError(
                path, f"gives non-finite outputs on split {where!r} (diverged?)", "train_member"
            )


def _stats_chunks(member_lp: torch.Tensor, chunk: int = 4096) -> dict[str, torch.Tensor]:
    out: dict[str, list] = {k: [] for k in ("pbar", "lbar", "floored", "rmi", "du")}
    for i in range(0, member_lp.shape[0], chunk):
        lp = member_lp[i : i + chunk]
        s = teacher_stats(lp)
        p = lp.double().exp()
        out["pbar"].append(s.mean_probs)
        out["lbar"].append(s.mean_log_probs)
        out["floored"].append(s.floored_mean_log_probs)
        out["rmi"].append(s.rmi)
        out["du"].append(-(torch.xlogy(p, p)).sum(-1).mean(1))
    return {k: torch.cat(v) for k, v in out.items()}


def build_cache(
    data_dir: str | Path,
    member_files: list[str | Path],
    seeds: list[int],
    out_dir: str | Path,
    cfg: dict,
    log=print,
) -> dict:
    """Run the members over every prepared split (without ``train`` when ``cfg["mode"]`` is
    ``online``: the students run the members themselves) and write the cache + manifest."""
    if len(member_files) != len(seeds):
        raise ValueError(f"{len(member_files)} member files but {len(seeds)} seeds")
    dtype = DTYPES.get(cfg.get("dtype", "float16"))
    if dtype is None:
        raise ValueError(f"teacher.dtype must be one of {sorted(DTYPES)}, got {cfg.get('dtype')!r}")
    device = select_device(cfg.get("device", "auto"))
    data_manifest = D.load_manifest(data_dir)
    models = [load_trained(f)[0] for f in member_files]
    out_dir = Path(out_dir)
    manifest = {
        "num_classes": int(data_manifest["num_classes"]),
        "num_members": len(models),
        "member_seeds": [int(s) for s in seeds],
        "member_sha256": [sha256_file(f) for f in member_files],
        "data_manifest": fingerprint(data_manifest["splits"]),
        "config": cfg,
        "pipeline_version": __version__,
        "code_sha256": code_fingerprint("teacher", "image"),
        "splits": {},
    }
    main = distributed.world().main  # in a data-parallel job all ranks predict, rank 0 writes
    shard_size = int(cfg.get("shard_size", 1 << 62))
    workers = int(cfg.get("workers", 0))
    online = cfg.get("mode", "cache") == "online"  # the students run the members on train
    total = sum(
        int(e["n"]) for k, e in data_manifest["splits"].items() if not (online and k == "train")
    ) * len(models)
    progress = Progress(total, f"{JOB.name} (images x members)", unit="img", log=log)
    for split in data_manifest["splits"]:
        if online and split == "train":
            continue
        d = D.load_split(data_dir, split)
        n = len(d["labels"])
        keep_members = split != "train" or bool(cfg.get("store_train_members", False))
        entry = {
            "files": [],
            "n": n,
            "ids_sha256": fingerprint(d["ids"].tolist()),
            "data_sha256": data_manifest["splits"][split]["sha256"],
            "has_members": keep_members,
            "sha256": [],
            "bytes": 0,
            "naive_float32_bytes": n * len(models) * manifest["num_classes"] * 4,
        }
        for shard, start in enumerate(range(0, n, shard_size)):  # bounded memory per shard
            rows = torch.arange(start, min(start + shard_size, n))
            images = (
                d["images"][rows]
                if isinstance(d["images"], torch.Tensor)
                else d["images"].subset(rows.tolist())
            )
            lp = torch.stack(
                [
                    predict_log_probs(
                        m, images, device, int(cfg.get("batch_size", 1024)), workers, progress
                    )
                    for m in models
                ],
                dim=1,
            )  # [n, M, K] float32
            if not main:
                continue
            _check_finite(lp.isfinite().all(-1).all(0), member_files, split)
            st = _stats_chunks(lp)
            tensors = {
                **encode_stats(st["pbar"], st["lbar"], st["floored"], st["rmi"], dtype),
                "data_uncertainty": st["du"].float(),
                "labels": d["labels"][rows],
                "ids": d["ids"][rows],
            }
            if keep_members:  # evaluation splits keep float32: the MI of agreeing members ~1e-4
                tensors["member_log_probs"] = lp.to(dtype if split == "train" else torch.float32)
            name = f"{split}.safetensors" if shard == 0 else f"{split}.shard{shard}.safetensors"
            atomic_save(tensors, out_dir / name)
            entry["files"].append(name)
            entry["sha256"].append(sha256_file(out_dir / name))
            entry["bytes"] += (out_dir / name).stat().st_size
        if not main:
            continue
        entry["file"] = entry["files"][0]
        manifest["splits"][split] = entry
        log(
            f"{split:10s} n={n:7d} {entry['bytes'] / 1e6:9.2f} MB in {len(entry['files'])} "
            f"file(s) (naive float32 [N,M,K]: {entry['naive_float32_bytes'] / 1e6:.2f} MB)"
        )
    if main:
        atomic_write_text(json.dumps(manifest, indent=2), out_dir / "manifest.json")
    return manifest


def validate(
    cache_dir: str | Path,
    data_dir: str | Path | None = None,
    member_files: list[str | Path] | None = None,
) -> dict:
    """The cache manifest, after checking it against the data and the member files."""
    cache_dir = Path(cache_dir)
    manifest = read_json(cache_dir / "manifest.json", "cache_teacher")
    if data_dir is not None:
        data_manifest = D.load_manifest(data_dir)
        if fingerprint(data_manifest["splits"]) != manifest["data_manifest"]:
            raise CacheMismatchError(
                cache_dir,
                f"the teacher cache was built from other data than {data_dir} "
                "(data manifest checksum differs)",
            )
        for split, entry in manifest["splits"].items():
            have = data_manifest["splits"].get(split)
            if have is None or have["n"] != entry["n"] or have["sha256"] != entry["data_sha256"]:
                raise CacheMismatchError(
                    cache_dir,
                    f"teacher cache split {split!r} (n={entry['n']}) does not match the data "
                    f"split ({'missing' if have is None else 'n=' + str(have['n'])})",
                )
        if int(data_manifest["num_classes"]) != int(manifest["num_classes"]):
            raise CacheMismatchError(
                cache_dir,
                f"teacher cache has K={manifest['num_classes']} classes, data has "
                f"K={data_manifest['num_classes']}",
            )
    if member_files is not None:
        shas = [sha256_file(f) for f in member_files]
        if shas != manifest["member_sha256"]:
            raise CacheMismatchError(
                cache_dir,
                f"the teacher cache was built from other members ({manifest['num_members']}"
                f" cached, {len(shas)} given, checksums differ)",
            )
    return manifest


def load_split(
    cache_dir: str | Path, split: str, *, verify: bool = True
) -> dict[str, torch.Tensor]:
    """One cached split (its shards concatenated), checked against the manifest: file
    checksums, N, K, M and the example ids."""
    cache_dir = Path(cache_dir)
    manifest = read_json(cache_dir / "manifest.json", "cache_teacher")
    entry = manifest["splits"].get(split)
    if entry is None:
        raise KeyError(f"split {split!r} is not cached in {cache_dir}")
    parts = []
    for name, sha in zip(entry["files"], entry["sha256"], strict=True):
        parts.append(read_tensors(cache_dir / name, sha256=sha if verify else None, rule=RULE))
    t = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    n, k, m = entry["n"], manifest["num_classes"], manifest["num_members"]
    where = cache_dir / entry["file"]
    if t["mean_probs"].shape != (n, k):
        raise CacheMismatchError(
            where, f"mean_probs has shape {tuple(t['mean_probs'].shape)}, manifest says ({n}, {k})"
        )
    if "member_log_probs" in t and t["member_log_probs"].shape != (n, m, k):
        raise CacheMismatchError(
            where,
            f"member_log_probs has shape {tuple(t['member_log_probs'].shape)}, "
            f"manifest says ({n}, {m}, {k})",
        )
    if fingerprint(t["ids"].tolist()) != entry["ids_sha256"]:
        raise CacheMismatchError(where, "example ids differ from the manifest")
    return t


def encode_stats(
    pbar: torch.Tensor,
    lbar: torch.Tensor,
    floored: torch.Tensor,
    rmi: torch.Tensor,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """Store ``pi_bar`` in ``dtype`` and both mean log-probs as ``dtype`` *gaps* to
    ``ln(pi_bar_stored + eps)``: by Jensen the gaps are ~0 wherever precision matters (head
    classes, and tail classes whose floored log-prob sits at ln eps), where float16 is exact to
    ~1e-3 instead of ~1e-2 near -16. RMI stays float32, computed in float64 from the members."""
    stored = pbar.to(dtype)
    ref = torch.log(stored.double() + EPS)
    return {
        "mean_probs": stored,
        "log_gap": (lbar.double() - ref).to(dtype),
        "floored_log_gap": (floored.double() - ref).to(dtype),
        "rmi": rmi.float(),
    }


def stats_from_cache(
    t: dict[str, torch.Tensor], num_members: int, idx: torch.Tensor | slice = slice(None)
) -> TeacherStats:
    """:class:`TeacherStats` for rows ``idx`` of a cached split (no member axis needed)."""
    pbar = t["mean_probs"][idx]
    ref = torch.log(pbar.double() + EPS)
    return TeacherStats.from_cache(
        pbar,
        ref + t["log_gap"][idx].double(),
        num_members,
        floored_mean_log_probs=ref + t["floored_log_gap"][idx].double(),
        rmi=t["rmi"][idx],
    )


class CachedTeacher:
    """What an image student learns from (``student_teacher``): the cached statistics of the
    train split, re-tempered from the cached member log-probs when the method's member transform
    needs them (EnD2 annealing or smoothing), and the val split for validation.

    Args:
        cache_dir, data_dir, member_files: the cache, checked against its data and members.
        val: the prepared val split; ``workers``: DataLoader workers for file-backed images.
        method, options: the student's method and its options.
    """

    def __init__(self, cache_dir, data_dir, member_files, val, method, options, device, workers=0):
        self.manifest = validate(cache_dir, data_dir, member_files)
        self.member_sha256 = self.manifest["member_sha256"]
        self.method, self.options, self.device, self.workers = method, options, device, workers
        self.num_members = int(self.manifest["num_members"])
        self.retemper = methods.needs_members(method, options)
        self._train_source(cache_dir, member_files)
        self.val = {
            k: v for k, v in load_split(cache_dir, "val").items() if k != "member_log_probs"
        }
        self.val_images = val["images"]
        self.val_stats = stats_from_cache(self.val, self.num_members)
        # validation loss at T = 1 without smoothing: the statistics of the val cache
        self.val_options = {
            k: v for k, v in options.items() if k not in ("temperature", "smoothing")
        }

    def _train_source(self, cache_dir, member_files) -> None:
        """Load what :meth:`stats` reads: the train split of the cache."""
        train = load_split(cache_dir, "train")
        if self.retemper and "member_log_probs" not in train:
            raise ValueError(
                "end2 with temperature annealing or smoothing needs the train member log-probs in "
                "the teacher cache: set teacher.store_train_members: true"
            )
        self.train = {k: v.to(self.device) for k, v in train.items()}

    def stats(self, idx: torch.Tensor, progress: float, x=None) -> TeacherStats:
        """The teacher statistics of train rows ``idx`` at ``progress`` (epochs done, the
        EnD2 temperature schedule's clock), read from the cache: the members' outputs on the
        un-augmented images, whatever view ``x`` of them the student saw."""
        idx = idx.to(self.device)
        if self.retemper:
            temperature, smoothing = methods.member_transform(self.method, self.options, progress)
            return teacher_stats(
                self.train["member_log_probs"][idx], temperature=temperature, smoothing=smoothing
            )
        return stats_from_cache(self.train, self.num_members, idx)

    def validate(self, model, epoch: int) -> dict[str, float]:
        """Validation accuracy, NLL, top-1 agreement with the ensemble, loss (T = 1, no
        smoothing) and mean ``ln sum exp z`` of the student ``model``."""
        raw = predict_logits(model, self.val_images, self.device, workers=self.workers)
        p = torch.softmax(raw.double(), -1)  # point prediction softmax(z)
        y = self.val["labels"]
        val_loss = methods.loss(self.method, self.val_options, raw, self.val_stats)
        return {
            "val_acc": Mx.accuracy(p, y),
            "val_nll": Mx.nll(p, y),
            "val_agreement": float(
                (p.argmax(1) == self.val_stats.mean_probs.argmax(1)).double().mean()
            ),
            "val_loss": float(val_loss),
            "val_log_precision": float(torch.logsumexp(raw.double(), -1).mean()),
        }
