"""Running Snakemake on a config from the tests (subprocess, in the repository)."""

import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def snakemake(*args, timeout=900):
    return subprocess.run(
        ["snakemake", *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[-1] if "Job stats:" in output else ""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def write_config(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_config(name: str, d: Path, **changes) -> tuple[dict, Path, Path]:
    """``config/<name>.yaml`` with its results (and any ``changes``) under ``d``, run to the
    end: ``(config, config file, results folder)``."""
    cfg = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
    cfg.update(results=str(d / "results"), **changes)
    cfgfile = write_config(cfg, d / "config.yaml")
    r = snakemake("--cores", 2, "--configfile", cfgfile)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return cfg, cfgfile, Path(cfg["results"])
