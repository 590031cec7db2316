"""pipeline.imports (the rerun triggers of the workflow) and the package's layering."""

import ast
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import tasks
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
    assert {"tasks/text/evaluation.py", "maths/tokens.py", "maths/metrics.py"} <= evaluate
    assert task_calls(PKG / "stages" / "distill.py") == {"student_teacher"}
    distill = {p.relative_to(PKG).as_posix() for p in stage_closure("distill", "image", REPO)}
    # through pipeline.training.start / seeded_model: the training set and the model as well
    assert {"tasks/image/cache.py", "tasks/image/data.py", "tasks/image/models.py"} <= distill
    assert "tasks/image/evaluation.py" not in distill
    with pytest.raises(ValueError, match="no stage module"):
        stage_closure("nope", "image", REPO)


@pytest.mark.parametrize("task", ["image", "text", "translation"])
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


def _task_package(name: str, pkg: Path) -> str | None:
    """The task package a module name belongs to (``pipeline.tasks.<task>...``), else None."""
    parts = name.split(".")
    task = parts[2] if parts[:2] == ["pipeline", "tasks"] and len(parts) > 2 else None
    return task if task and (pkg / "tasks" / task).is_dir() else None


def _layer_problems(pkg: Path) -> list[str]:
    """Every import of ``pkg`` (a ``pipeline`` folder) that breaks the layers."""
    bad = []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg).as_posix()
        own = rel.split("/")[1] if rel.startswith("tasks/") and rel.count("/") > 1 else None
        for n in sorted(_imports(path)):
            if rel.startswith("maths/") and not n.startswith("pipeline.maths"):
                bad.append(f"{rel}: the maths imports {n}")
            if n.startswith("pipeline.stages"):  # no stage imports a stage, nothing below one
                bad.append(f"{rel}: imports the stage {n}")
            other = _task_package(n, pkg)
            if other is not None and other != own:
                where = "a stage" if rel.startswith("stages/") else "outside its task"
                bad.append(f"{rel}: {where} imports the task module {n}")
    return bad


def test_layers():
    """The maths imports only itself; nothing imports a stage (no stage another stage's code:
    what stages share lives below them); a task module imports no other task; no stage (nor any
    shared module) imports a task package by name: they reach a task through pipeline.tasks."""
    assert _layer_problems(PKG) == []


def test_layers_catch_each_kind_of_breach(tmp_path):
    """The check above fails on each breach it names (so it cannot pass by construction)."""
    shutil.copytree(PKG, tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    breaches = {
        "stages/figures.py": "from pipeline.tasks.image import data\n",
        "stages/distill.py": "from pipeline.stages.train import train_member\n",
        "tasks/text/model.py": "from pipeline.tasks.image import models\n",
        "maths/losses.py": "from pipeline import methods\n",
        "training.py": "import pipeline.stages.train\n",
    }
    for rel, line in breaches.items():
        path = tmp_path / "pipeline" / rel
        path.write_text(line + path.read_text())
    found = "\n".join(_layer_problems(tmp_path / "pipeline"))
    for rel in breaches:
        assert rel in found, (rel, found)


def test_no_task_is_probed_or_named_where_every_task_runs():
    """Stages, rules, the config checks and the plan learn what a task can do from its spec:
    no ``hasattr`` probing, and no task name (as a string) compared or branched on."""
    names = set(TASKS)
    sources = [*(PKG / "stages").glob("*.py"), PKG / "config.py", PKG / "plan.py"]
    sources += [PKG / "training.py", PKG / "engine.py"]
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "hasattr":
                raise AssertionError(f"{path.name}: hasattr")
            if isinstance(node, ast.Constant) and node.value in names:
                raise AssertionError(f"{path.name}: the task name {node.value!r}")
    for path in [REPO / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")]:
        text = path.read_text()
        for name in names:
            assert f'"{name}"' not in text and f"'{name}'" not in text, (path.name, name)
        assert "hasattr" not in text, path.name


def test_files_are_small():
    """No module of the package over 400 lines; the shared rule file under 150."""
    for path in PKG.rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path
    common = REPO / "workflow" / "rules" / "common.smk"
    assert len(common.read_text().splitlines()) < 150


def _params(fn) -> list[str]:
    return [n for n in inspect.signature(fn).parameters if n != "self"]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_implements_the_interface(name):
    """Each function of the Task protocol (and of Diagnostic and EnsembleTargets exactly where
    the spec declares them) with the protocol's parameters, in its order; the spec is the
    package's own."""
    impl = tasks.load(name)
    spec = tasks.spec(name)
    for function in tasks.INTERFACE:
        got = getattr(impl, function, None)
        assert inspect.isfunction(got), (name, function)
        assert _params(got) == _params(getattr(tasks.Task, function)), (name, function)
    for function, flag in tasks.OPTIONAL.items():
        assert (function in vars(impl)) == getattr(spec, flag), (name, function)
        if getattr(spec, flag):
            want = _params(getattr(tasks.PROTOCOLS[flag], function))
            assert _params(getattr(impl, function)) == want, (name, function)
    schemas = {p.name for p in (REPO / "workflow" / "schemas").glob("*.yaml")}
    assert spec.name == name and spec.schema in schemas
    with pytest.raises(ValueError, match="unknown task 'audio'"):
        tasks.spec("audio")


def test_a_task_is_discovered_from_its_package(tmp_path):
    """A package under pipeline/tasks with a spec module is a task, found without editing any
    shared module."""
    shutil.copytree(PKG, tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    toy = tmp_path / "pipeline" / "tasks" / "toy"
    toy.mkdir()
    (toy / "__init__.py").write_text("")
    spec = (PKG / "tasks" / "image" / "spec.py").read_text()
    (toy / "spec.py").write_text(spec.replace('name="image"', 'name="toy"'))
    code = "import pipeline.tasks as t; print(sorted(t.TASKS), t.spec('toy').cached_teacher)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path)},
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['image', 'text', 'toy', 'translation'] True"
