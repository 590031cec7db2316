"""pipeline.config and the schemas: one home per config fact, and every check the workflow runs
before any job (each a ConfigError naming its key)."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from pipeline import methods
from pipeline.config import ConfigError, check, check_keys
from pipeline.defaults import TRAINING_DEFAULTS
from pipeline.tasks import TASKS

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "workflow" / "schemas"


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def config(name: str, **changes) -> dict:
    """``config/<name>.yaml`` with ``changes`` (dotted keys), validated (defaults filled in) by
    its task's schema, as the workflow does before the checks."""
    cfg = _yaml(REPO / "config" / f"{name}.yaml")
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        node = cfg
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    task = cfg.get("task", "image")
    check_keys(cfg)
    validate(cfg, str(SCHEMAS / TASKS[task].schema))
    return cfg


def refused(cfg: dict, key: str) -> ConfigError:
    task = cfg.get("task", "image")
    with pytest.raises(ConfigError) as err:
        check(cfg, task)
    assert err.value.key == key, err.value
    return err.value


@pytest.mark.parametrize(
    "name",
    [
        "config",
        "smoke",
        "augment",
        "text_smoke",
        "text",
        "text_full",
        "imagenet",
        "translation_smoke",
    ],
)
def test_the_shipped_configs_pass(name):
    cfg = config(name)
    check(cfg, cfg.get("task", "image"))


def test_the_schemas_method_options_are_the_registrys():
    """Each registered method's block lists exactly its options (the registry's defaults) and
    the student options; a variant may take any of them and names a registered method."""
    defs = _yaml(SCHEMAS / "definitions.schema.yaml")["$defs"]
    block = defs["methods"]
    assert set(block["properties"]) == set(methods.METHODS)
    for name, method in methods.METHODS.items():
        options = set(block["properties"][name]["properties"])
        assert options == set(method.defaults) | set(methods.STUDENT_OPTIONS), name
    every = {o for m in methods.METHODS.values() for o in m.defaults} | set(methods.STUDENT_OPTIONS)
    (variant,) = block["patternProperties"].values()
    assert set(variant["properties"]) == every | {"method"}
    assert variant["properties"]["method"]["enum"] == list(methods.METHODS)
    (pattern,) = block["patternProperties"]
    assert "|".join(methods.METHODS) in pattern
    assert set(defs["method_options"]["properties"]) == every


def test_every_training_default_is_a_schema_key_and_both_schemas_share_the_blocks():
    defs = _yaml(SCHEMAS / "definitions.schema.yaml")["$defs"]
    assert set(TRAINING_DEFAULTS) <= set(defs["training"]["properties"])
    for spec in TASKS.values():
        schema = _yaml(SCHEMAS / spec.schema)
        text = (SCHEMAS / spec.schema).read_text()
        assert "definitions.schema.yaml#/$defs/training" in text, spec.name
        students = schema["properties"]["students"]
        assert students["properties"]["methods"] == {
            "$ref": "definitions.schema.yaml#/$defs/methods"
        }
        assert "default" not in str(defs["training"]), "training defaults live in pipeline"


def test_an_image_config_takes_method_variants_as_the_docs_say():
    variants = {"end": {}, "pd_end2": {}, "pd_end2_moff0": {"method": "pd_end2", "model_offset": 0}}
    cfg = config("smoke", **{"students.methods": variants})
    check(cfg, "image")


def test_a_capability_the_task_lacks_is_refused_naming_the_key():
    cfg = config("smoke", **{"students.methods.end": {"init_bias": "log_marginal"}})
    err = refused(cfg, "students.methods.end.init_bias")
    assert "gives no class marginal" in str(err)
    refused(config("smoke", **{"students.curve_every": 10}), "students.curve_every")


def test_a_one_member_ensemble_is_refused_for_methods_that_need_its_diversity():
    err = refused(config("smoke", **{"ensemble.seeds": [0]}), "ensemble.seeds")
    assert "['end2', 'pd_end2', 'pd_fkl']" in str(err) and "RMI is 0" in str(err)
    refused(config("text_smoke", **{"ensemble.seeds": [3]}), "ensemble.seeds")
    only_kd = config("smoke", **{"ensemble.seeds": [0], "students.methods": {"end": {}}})
    check(only_kd, "image")  # plain KD from one model is fine


def test_the_sweep_keys_are_checked():
    refused(config("text_smoke", **{"group_vocab_sizes": {"nope": [50]}}), "group_vocab_sizes.nope")
    refused(config("text_smoke", **{"group_vocab_sizes": {"end": [70]}}), "group_vocab_sizes.end")
    cfg = config("text_smoke", **{"gradient_analysis.token_vocab": 70})
    refused(cfg, "gradient_analysis.token_vocab")
    every = ["end", "end2", "pd_end2", "pd_end2_moff0_bias"]
    only_500 = {g: [500] for g in every}
    cfg = config("text_smoke", **{"group_vocab_sizes": only_500, "lr_search.vocab": 50})
    err = refused(cfg, "gradient_analysis.token_vocab")  # the diagnostic's V has no student
    assert "a V at which a method group runs" in str(err)
    both = config("translation_smoke")  # the diagnostic at every V: a list of sizes
    assert both["gradient_analysis"]["token_vocab"] == [200, 600]
    check(both, "translation")
    for bad in ([200, 700], [600, 600]):
        cfg = config("translation_smoke", **{"gradient_analysis.token_vocab": bad})
        refused(cfg, "gradient_analysis.token_vocab")
    refused(config("text_smoke", **{"lr_search.vocab": 70}), "lr_search.vocab")
    alone = config("translation_smoke", ensemble_translations={"shards": 2})  # without targets
    assert "students.targets: ensemble" in str(refused(alone, "ensemble_translations"))
    cfg = config("text_smoke", **{"lr_search.lrs": [0.01, 0.0100000001]})  # one file name
    refused(cfg, "lr_search.lrs")
    image = config("smoke")
    image["lr_search"] = {"vocab": 10, "lrs": [0.1, 0.2]}  # (its schema has no such key)
    assert "only a task that sweeps" in str(refused(image, "lr_search"))


def test_the_tasks_own_checks_run():
    refused(config("text_smoke", **{"dataset.val_mod": 9}), "dataset.test_mod")
    refused(config("text_smoke", **{"ood.sets": ["kjv"]}), "figure.ood_set")
    cfg = config("smoke")
    cfg["ood"]["severities"] = []
    refused(cfg, "ood.severities")


def test_training_checks_read_the_shared_defaults():
    """An SGD slice without momentum takes the default's (0.9): accepted; a warm-up as long as
    training is not."""
    cfg = config("smoke", **{"ensemble.optimizer": "sgd", "ensemble.weight_decay": 0.0})
    check(cfg, "image")
    refused(config("smoke", **{"students.warmup_epochs": 2}), "students.warmup_epochs")
    bad = copy.deepcopy(config("smoke", **{"ensemble.optimizer": "sgd"}))
    bad["ensemble"]["momentum"] = 0.0
    refused(bad, "ensemble.momentum")


def test_no_weight_decay_patterns_must_be_regular_expressions():
    err = refused(config("config", **{"ensemble.no_weight_decay": ["bn(weight"]}),
                  "ensemble.no_weight_decay")  # fmt: skip
    assert "a regular expression" in str(err)
    check(config("imagenet"), "image")  # the official exemption's pattern compiles


def test_the_cache_comparison_config_differs_from_augment_only_in_its_teacher():
    online, cache = _yaml(REPO / "config/augment.yaml"), _yaml(REPO / "config/augment_cache.yaml")
    assert cache["teacher"] == {**online["teacher"], "mode": "cache", "allow_view_mismatch": True}
    rest = ("results", "teacher")
    assert {k: v for k, v in cache.items() if k not in rest} == {
        k: v for k, v in online.items() if k not in rest
    }
    check(config("augment_cache"), "image")  # the mismatch accepted on purpose
    refused(config("augment", **{"teacher.mode": "cache"}), "teacher.mode")
