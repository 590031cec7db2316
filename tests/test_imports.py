"""pipeline.imports (the rerun triggers of the workflow) and the package's layering."""

import ast
from pathlib import Path

import pytest

from pipeline.imports import import_closure, module_file, stage_closure, task_calls
from pipeline.tasks import TASKS

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "pipeline"


def _write(root: Path, name: str, text: str) -> None:
    path = root / Path(*name.split("."))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".py").write_text(text)


def test_closure_follows_every_kind_of_import(tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "sub").mkdir()
    (tmp_path / "pipeline" / "sub" / "__init__.py").write_text("")
    _write(
        tmp_path, "pipeline.a", "import os\nfrom pipeline import b\nfrom pipeline.sub.c import f\n"
    )
    b = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pipeline.unused\n"
    _write(tmp_path, "pipeline.b", b + "def g():\n    import pipeline.d\n")  # lazy import
    _write(tmp_path, "pipeline.sub.c", "from . import e\ndef f(): pass\n")  # relative import
    _write(tmp_path, "pipeline.d", "")
    _write(tmp_path, "pipeline.sub.e", "")
    _write(tmp_path, "pipeline.unused", "")  # imported for type checking only
    got = {str(p.relative_to(tmp_path)) for p in import_closure(["pipeline.a"], tmp_path)}
    assert got == {
        "pipeline/__init__.py",
        "pipeline/a.py",
        "pipeline/b.py",
        "pipeline/d.py",
        "pipeline/sub/__init__.py",
        "pipeline/sub/c.py",
        "pipeline/sub/e.py",
    }
    assert module_file("os", tmp_path) is None


def test_partial_closure_follows_only_the_called_functions(tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "__init__.py").write_text("")
    _write(
        tmp_path,
        "pipeline.task",
        "def a():\n    import pipeline.x\ndef b():\n    import pipeline.y\n",
    )
    _write(tmp_path, "pipeline.x", "")
    _write(tmp_path, "pipeline.y", "")
    got = import_closure(["pipeline.task"], tmp_path, partial={"pipeline.task": {"a"}})
    names = {p.name for p in got}
    assert "x.py" in names and "y.py" not in names


def test_stage_closures_of_the_real_package():
    train = {p.relative_to(PKG).as_posix() for p in stage_closure("train", "image", REPO)}
    assert {"stages/train.py", "engine.py", "tasks/image/data.py", "tasks/image/models.py"} <= train
    assert "tasks/image/evaluation.py" not in train  # an evaluation edit retrains nothing
    prepare = {p.relative_to(PKG).as_posix() for p in stage_closure("prepare", "image", REPO)}
    assert "engine.py" not in prepare  # a training-loop edit re-prepares no data
    assert not any(p.startswith("tasks/text") for p in train)
    evaluate = {p.relative_to(PKG).as_posix() for p in stage_closure("evaluate", "text", REPO)}
    assert {"tasks/text/evaluation.py", "tasks/text/tokens.py", "maths/metrics.py"} <= evaluate
    assert task_calls(PKG / "stages" / "distill.py") == {"student_teacher"}
    distill = {p.relative_to(PKG).as_posix() for p in stage_closure("distill", "image", REPO)}
    # through stages.train.start / seeded_model: the training set and the model as well
    assert {"tasks/image/cache.py", "tasks/image/data.py", "tasks/image/models.py"} <= distill
    assert "tasks/image/evaluation.py" not in distill
    with pytest.raises(ValueError, match="no stage module"):
        stage_closure("nope", "image", REPO)


@pytest.mark.parametrize("task", ["image", "text"])
def test_no_stage_reruns_when_a_config_check_changes(task):
    """pipeline/config.py runs while Snakemake builds the DAG; the stages raise ConfigError from
    pipeline/errors.py, so an edit of a check is in no rule's code inputs."""
    stages = [p.stem for p in (PKG / "stages").glob("*.py") if p.stem != "__init__"]
    for stage in stages:
        closure = {p.relative_to(PKG).as_posix() for p in stage_closure(stage, task, REPO)}
        assert "config.py" not in closure, stage
    prepare = {p.relative_to(PKG).as_posix() for p in stage_closure("prepare", task, REPO)}
    assert "errors.py" in prepare  # the prepare stage refuses data-dependent config values


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n.startswith("pipeline")}


def test_layers():
    """The maths imports no stage or task, no task imports another task or a stage, no stage
    imports another stage's private names, and nothing below the stages imports one."""
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        imports = _imports(path)
        if rel.startswith("maths/"):
            assert all(n.startswith("pipeline.maths") for n in imports), (rel, imports)
        if rel.startswith("tasks/") and rel != "tasks/__init__.py":
            task = rel.split("/")[1]
            for n in imports:
                assert not n.startswith("pipeline.stages"), (rel, n)
                other = n.split(".")[2] if n.startswith("pipeline.tasks.") else None
                assert other is None or other not in TASKS or other == task, (rel, n)
        if not rel.startswith("stages/"):
            assert not any(n.startswith("pipeline.stages") for n in imports), (rel, imports)
        else:
            for n in imports:
                if n.startswith("pipeline.stages."):
                    assert not n.rsplit(".", 1)[1].startswith("_"), (rel, n)


def test_maths_files_are_small():
    for path in (PKG / "maths").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path


@pytest.mark.parametrize("name", ["image", "text"])
def test_every_task_implements_the_interface(name):
    import inspect

    from pipeline import tasks

    impl = tasks.load(name)
    for function in tasks.INTERFACE:
        assert inspect.isfunction(getattr(impl, function, None)), (name, function)
    assert tasks.spec(name).name == name
    with pytest.raises(ValueError, match="unknown task 'audio'"):
        tasks.spec("audio")
