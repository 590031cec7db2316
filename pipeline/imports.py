"""The source files a module runs: the closure of its imports within the ``pipeline`` package,
found by reading the code (``ast``), not by importing it.

The workflow lists these files as each rule's inputs, so editing any module a stage really
imports (directly, through another module, or inside a function) reruns exactly the jobs of that
stage. A stage reaches its task through ``impl = tasks.load(task)`` and calls ``impl.<function>``:
:func:`stage_closure` reads which interface functions the stage calls and follows only the imports
of those functions in the task's ``__init__.py`` (which imports its implementation modules inside
the functions), so an edit of the task's evaluation code reruns its evaluations, not its
training. Standard library only, no torch.
"""

from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["import_closure", "module_file", "stage_closure", "task_calls"]

PACKAGE = "pipeline"


def module_file(name: str, root: Path) -> Path | None:
    """The file of module ``name`` (``pipeline.x.y``) under ``root`` (the folder holding
    ``pipeline/``), or ``None`` when ``name`` is not a module of the package."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = Path(root, *name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _nodes(tree: ast.Module, functions: set[str] | None):
    """Every node of ``tree``; with ``functions``, the bodies of other top-level functions are
    skipped."""
    if functions is None:
        yield from ast.walk(tree)
        return
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and stmt.name not in functions:
            continue
        yield from ast.walk(stmt)


def _imported(path: Path, name: str, is_package: bool, functions=None) -> set[str]:
    """Names of the modules ``path`` (module ``name``) imports, ``from a import b`` giving both
    ``a`` and ``a.b`` (one of them is not a module and is dropped by the caller); with
    ``functions``, only the imports at module level and inside those top-level functions."""
    out: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in _nodes(ast.parse(path.read_text(), filename=str(path)), functions):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{alias.name}" for alias in node.names)
    return out


def import_closure(
    roots: list[str], root: Path, partial: dict[str, set[str]] | None = None
) -> list[Path]:
    """Every file of the ``pipeline`` package that the modules ``roots`` import, themselves and
    the ``__init__.py`` of every package on the way included, sorted. ``partial`` maps a module
    to the only top-level functions of it whose imports are followed."""
    partial = partial or {}
    seen: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name, root)
        if path is None:
            continue
        seen[name] = path
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        todo.extend(_imported(path, name, path.name == "__init__.py", partial.get(name)))
    return sorted(set(seen.values()))


def task_calls(path: Path) -> set[str]:
    """The attributes a module reads from the task it loads: ``impl.<name>`` for every ``impl``
    bound to ``tasks.load(...)`` (also in a tuple assignment)."""
    tree = ast.parse(Path(path).read_text(), filename=str(path))

    def is_load(v: ast.AST) -> bool:
        return (
            isinstance(v, ast.Call)
            and isinstance(v.func, ast.Attribute)
            and v.func.attr == "load"
            and isinstance(v.func.value, ast.Name)
            and v.func.value.id == "tasks"
        )

    bound: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            if isinstance(target, ast.Name) and is_load(node.value):
                bound.add(target.id)
            elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                for t, v in zip(target.elts, node.value.elts, strict=False):
                    if isinstance(t, ast.Name) and is_load(v):
                        bound.add(t.id)
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in bound
    }


def stage_closure(stage: str, task: str, root: Path) -> list[Path]:
    """The files stage ``pipeline.stages.<stage>`` runs for ``task``: its own import closure and,
    when it loads the task, what the task functions it calls import."""
    module = f"{PACKAGE}.stages.{stage}"
    path = module_file(module, root)
    if path is None:
        raise ValueError(f"no stage module {module} under {root}")
    calls = task_calls(path)
    if not calls:
        return import_closure([module], root)
    task_module = f"{PACKAGE}.tasks.{task}"
    return import_closure([module, task_module], root, partial={task_module: calls})
