# Config validation, target lists and helpers shared by the workflow files.
import json
import os
from pathlib import Path

from snakemake.utils import validate

from pipeline.distill import needs_members
from pipeline.figures import FIGURES


TASK = config.get("task", "image")  # "text": config/text.yaml (workflow/rules/text.smk)
validate(config, schema="../schemas/text.schema.yaml" if TASK == "text" else "../schemas/config.schema.yaml")

R = config["results"]  # output root of this experiment
THREADS = int(config.get("threads", 1))
_RES = config.get("resources", {})
MEM_MB = int(_RES.get("mem_mb", 4000))
RUNTIME = int(_RES.get("runtime", 60))
GPU = int(_RES.get("gpu", 0))
DEVICE = config.get("device", "auto")
REPO = Path(workflow.basedir)

MEMBER_SEEDS = [int(s) for s in config["ensemble"]["seeds"]]
STUDENT_SEEDS = [int(s) for s in config["students"]["seeds"]]
METHODS = list(config["students"]["methods"])
_FOLDERS = config["ood"].get("folders") or {}  # imagefolder shift/OOD sets
DATA_SPLITS = (
    ["train", "val", "test"]
    + [f"ood_{name}" for name in config["ood"].get("sets", [])]
    + (["shift"] if config["ood"].get("corruptions") else [])
    + [f"ood_{n}" for n, f in _FOLDERS.items() if f["kind"] == "ood"]
    + [f"shift_{n}" for n, f in _FOLDERS.items() if f["kind"] == "shift"]
    + (["shift"] if any(f["kind"] == "corruptions" for f in _FOLDERS.values()) else [])
)


def code(*modules):
    """Source files of pipeline/ a job runs: editing them reruns its jobs (mtime trigger)."""
    return [str(REPO / "pipeline" / f"{m}.py") for m in ("__init__", "io", *modules)]


def as_json(obj):
    """Deterministic JSON for params (sorted keys): params change exactly when config does."""
    return json.dumps(obj, sort_keys=True)


def member_config(seed):
    """The ensemble config slice of one member: shared settings + that seed's overrides."""
    ens = config["ensemble"]
    cfg = {k: v for k, v in ens.items() if k not in ("seeds", "overrides")}
    cfg.update(ens.get("overrides", {}).get(str(seed), {}))
    return cfg


def teacher_config():
    t = dict(config.get("teacher", {}))
    # EnD2 with a temperature schedule or smoothing re-tempers members: needs their log-probs
    needed = any(needs_members(m, o) for m, o in config["students"]["methods"].items())
    t["store_train_members"] = bool(t.get("store_train_members", False)) or needed
    return t


def student_config(method):
    s = config["students"]
    cfg = {k: v for k, v in s.items() if k not in ("seeds", "methods")}
    cfg["method"] = method
    cfg["options"] = s["methods"][method]
    return cfg


def data_files():
    return [f"{R}/data/{split}.safetensors" for split in DATA_SPLITS]


def teacher_files():
    return [f"{R}/teacher/{split}.safetensors" for split in DATA_SPLITS]


def member_files():
    return expand(f"{R}/members/seed{{seed}}/model.safetensors", seed=MEMBER_SEEDS)


SYSTEMS = (
    [f"member-{s}" for s in MEMBER_SEEDS]
    + ["ensemble"]
    + [f"{m}-seed{s}" for m in METHODS for s in STUDENT_SEEDS]
)
TABLES = ["main", "prr", "ood", "shift", "shift_sets"]


def system_model(wc):
    """The student weights a system needs (members and the ensemble read the cache only)."""
    if wc.system.startswith("member-") or wc.system == "ensemble":
        return []
    method, seed = wc.system.rsplit("-seed", 1)
    return [f"{R}/students/{method}/seed{seed}/model.safetensors"]


_GA = config.get("gradient_analysis", {})


def fig(name):
    return report(f"{R}/figures/{name}.png", caption=f"../report/{name}.rst", category="Figures")


# ----------------------------------------------------------------------------- token task
def text_config(section, method=None):
    """The members' or students' config slice (students: + method and its options)."""
    s = config[section]
    cfg = {k: v for k, v in s.items() if k not in ("seeds", "methods")}
    if method is not None:
        cfg["method"] = method
        cfg["options"] = s["methods"][method]
    return cfg


def text_members(wc):
    return expand(f"{R}/V{wc.vocab}/members/seed{{seed}}/model.safetensors", seed=MEMBER_SEEDS)


def text_model(wc):
    if wc.system.startswith("member-") or wc.system == "ensemble":
        return []
    method, seed = wc.system.rsplit("-seed", 1)
    return [f"{R}/V{wc.vocab}/students/{method}/seed{seed}/model.safetensors"]
