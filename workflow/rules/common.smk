# Config validation, target lists and helpers shared by every rule file.
import json
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

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
DATA_SPLITS = (
    ["train", "val", "test"]
    + [f"ood_{name}" for name in config["ood"].get("sets", [])]
    + (["shift"] if config["ood"].get("corruptions") else [])
)


wildcard_constraints:
    seed=r"\d+",
    method="|".join(METHODS),


def code(*modules):
    """Source files of pipeline/ a rule runs: editing them reruns the rule (mtime trigger)."""
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


def anneals_temperature():
    t = config["students"]["methods"].get("end2", {}).get("temperature", {})
    return float(t.get("initial", 1.0)) != 1.0


def teacher_config():
    t = dict(config.get("teacher", {}))
    # EnD2 with a temperature schedule re-tempers members: it needs their train log-probs
    t["store_train_members"] = bool(t.get("store_train_members", False)) or anneals_temperature()
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
