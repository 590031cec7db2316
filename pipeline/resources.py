"""Per-stage resource record, written beside Snakemake's benchmark files (which have no GPU
columns): wall time, device and its name, peak GPU memory, peak RSS, samples and samples/s.

Used as a context manager by every stage's ``main``::

    with ResourceRecord(path, "train_member", device) as rec:
        ...; rec.samples += n
"""

from __future__ import annotations

import json
import platform
import resource
import time
from pathlib import Path

import torch

from pipeline import distributed as D
from pipeline.io import atomic_write_text


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


class ResourceRecord:
    """Measures the enclosed block and writes one JSON record to ``path`` (if given)."""

    def __init__(self, path: str | Path | None, stage: str, device: torch.device):
        self.path, self.stage, self.device = path, stage, device
        self.samples = 0

    def __enter__(self) -> ResourceRecord:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        wall = time.perf_counter() - self.t0
        if self.path is None or exc_type is not None:
            return
        peak_gpu = None
        if self.device.type == "cuda":
            peak_gpu = torch.cuda.max_memory_allocated(self.device) / 2**20
        record = {
            "stage": self.stage,
            "wall_s": wall,
            "device": str(self.device),
            "device_name": device_name(self.device),
            "threads": torch.get_num_threads(),
            "processes": D.world().size,  # data-parallel ranks (this record is rank 0's)
            "peak_gpu_mem_mb": peak_gpu,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "samples": self.samples,
            "samples_per_s": self.samples / wall if wall > 0 else None,
            "torch": torch.__version__,
        }
        atomic_write_text(json.dumps(record, indent=2), self.path)
