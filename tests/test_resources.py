"""pipeline.resources: the per-job resource record."""

import json

import pytest
import torch

from pipeline.resources import ResourceRecord


def test_resource_record(tmp_path):
    with ResourceRecord(tmp_path / "r.json", "stage", torch.device("cpu")) as rec:
        rec.samples = 100
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["stage"] == "stage" and r["samples"] == 100 and r["wall_s"] > 0
    assert r["peak_gpu_mem_mb"] is None and r["peak_rss_mb"] > 0 and r["samples_per_s"] > 0


def test_resource_record_is_not_written_for_a_failed_job(tmp_path):
    with pytest.raises(RuntimeError), ResourceRecord(tmp_path / "r.json", "s", torch.device("cpu")):
        raise RuntimeError("boom")
    assert not (tmp_path / "r.json").exists()
    with ResourceRecord(None, "s", torch.device("cpu")) as rec:  # no path: nothing written
        rec.samples = 1
    assert list(tmp_path.iterdir()) == []
