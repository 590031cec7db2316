"""pipeline.plan: what a config asks the workflow to build (the rule files read it)."""

import json

from pipeline.plan import Plan, as_json
from pipeline.tasks import spec
from tests.test_config import config


def test_sub_runs_systems_and_the_groups_at_each_vocab():
    cfg = config("text_smoke", group_vocab_sizes={"end2": [500]})
    p = Plan(cfg, spec("text"))
    assert p.RUN == "results/text_smoke/V{vocab}" and p.ks == [50, 500]
    assert p.systems == [
        "member-0",
        "member-1",
        "ensemble",
        "end-seed0",
        "end2-seed0",
        "pd_end2-seed0",
        "pd_end2_moff0_bias-seed0",
    ]
    got = p.runs(f"{p.RUN}/eval/{{system}}", system=["ensemble", "end-seed0", "end2-seed0"])
    assert got == [  # the sub-run outermost; EnD2 only at V = 500
        "results/text_smoke/V50/eval/ensemble",
        "results/text_smoke/V50/eval/end-seed0",
        "results/text_smoke/V500/eval/ensemble",
        "results/text_smoke/V500/eval/end-seed0",
        "results/text_smoke/V500/eval/end2-seed0",
    ]
    assert p.runs("x/{method}", method=["end2"]) == ["x/end2"]  # V dropped where not a wildcard
    assert p.token_vocabs == [50]
    assert p.token_groups == {50: ["end", "pd_end2", "pd_end2_moff0_bias"]}
    image = Plan(config("smoke"), spec("image"))
    assert image.RUN == image.R == "results/smoke" and image.runs("a/{seed}", seed=[2, 1]) == [
        "a/2",
        "a/1",
    ]
    assert image.runs("a") == ["a"] and image.token_vocabs == []


def test_config_slices_of_members_students_and_trials():
    image = Plan(config("smoke", **{"ensemble.overrides": {"1": {"lr": 0.02}}}), spec("image"))
    assert image.member_config(1)["lr"] == 0.02 and image.member_config(0)["lr"] == 0.005
    assert "seeds" not in image.member_config(0) and "overrides" not in image.member_config(0)
    p = Plan(config("text_smoke", vocab_overrides={"500": {"epochs": 2}}), spec("text"))
    variant = p.student_config("pd_end2_moff0_bias", 500)
    assert variant["method"] == "pd_end2" and variant["group"] == "pd_end2_moff0_bias"
    assert variant["options"] == {"model_offset": 0.0, "init_bias": "log_marginal"}
    assert variant["epochs"] == 2 and p.student_config("end", 50)["epochs"] == 1
    assert "group" not in p.student_config("end")
    trial = p.lr_trial_config("end", "0.003")
    assert trial["lr"] == 0.003 and trial["train_sentences"] == 200 and trial["epochs"] == 1
    assert json.loads(as_json(trial)) == trial and as_json({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'


def test_a_cached_teacher_stores_member_log_probs_when_a_group_retempers():
    smoke = Plan(config("smoke"), spec("image"))  # its EnD2 anneals a temperature
    assert smoke.teacher_config()["store_train_members"] is True
    assert "threads" not in smoke.teacher_config()
    plain = config("smoke", **{"students.methods": {"end": {}, "end2": {}}})
    assert Plan(plain, spec("image")).teacher_config()["store_train_members"] is False
    online = Plan(config("text_smoke"), spec("text")).teacher_config()
    assert "store_train_members" not in online  # the token task runs its members online


def test_how_jobs_start_and_what_they_ask_for():
    one = Plan(config("smoke"), spec("image"))
    assert one.launch() == "python -m" and one.job_threads() == 1
    assert one.job_resources() == {"mem_mb": 2000, "runtime": 10, "gpu": 0}
    cfg = config("smoke", resources={"gpu": 4, "processes": 4, "nodes": 2}, threads=3)
    many = Plan(cfg, spec("image"))
    assert many.launch() == "python -m pipeline.launch --processes 4 --nodes 2 --"
    assert many.launch(parallel=False) == "python -m"
    assert many.job_threads() == 12 and many.job_threads(per_process=2) == 8
    assert many.job_resources() == {
        "mem_mb": 4000,
        "runtime": 60,
        "gpu": 8,
        "mpi": "srun",
        "tasks_per_node": 4,
        "nodes": 2,
        "cpus_per_task": 3,
    }


def test_figure_and_analysis_arguments_come_from_the_registry_and_config():
    image = Plan(config("smoke"), spec("image"))
    assert image.figure_options() == "--ece-bins 10"
    assert image.figure_kinds() == ["per_example", "data_manifest", "tidy", "histories"] + [
        "shares",
        "profile",
    ]
    assert image.gradient_args() == "--ks 10 100 1000 --batch 2 --profile-k 1000"
    text = Plan(config("text_smoke"), spec("text"))
    assert text.figure_options() == "--ood-set permuted --measure knowledge"
    assert text.token_args() == ""  # the stage's default
    sentences = config("text_smoke", **{"gradient_analysis.token_sentences": 50})
    assert Plan(sentences, spec("text")).token_args() == "--sentences 50"


def test_students_on_the_ensemble_s_translations_read_them_at_their_v():
    """students.targets: ensemble: each student's config names its V's translations, the
    learning-rate trials those at the search's V; the decoded rows cover the trials' pairs too."""
    cfg = config(
        "translation_full",
        **{
            "students.targets": "ensemble",
            "students.train_pairs": 14000,
            "ensemble_translations": {"shards": 3},
        },
    )
    p = Plan(cfg, spec("translation"))
    assert p.ensemble_targets and p.translation_shards == [0, 1, 2]
    R = "results/translation_full"
    assert p.student_config("end", 1000)["translations"] == f"{R}/V1000/ensemble_translations"
    assert p.lr_trial_config("end", 0.001)["translations"] == f"{R}/V4000/ensemble_translations"
    assert p.student_data_inputs(f"{R}/V4000") == {
        "translations": f"{R}/V4000/ensemble_translations/train.safetensors"
    }
    assert p.translated_pairs(4000) == ["14000", "3000"] and p.translated_pairs(1000) == ["14000"]
    assert p.translation_config() == {"beam": 5, "alpha": 1.0, "batch": 32}
    whole_split = config("translation_full", **{"students.targets": "ensemble"})
    whole = Plan(whole_split, spec("translation"))
    assert whole.translated_pairs(4000) == ["all", "3000"]  # students on the whole split
    reference = Plan(config("translation_full"), spec("translation"))
    assert not reference.ensemble_targets and reference.student_data_inputs() == {}
    assert "translations" not in reference.student_config("end", 1000)
