"""The source files a module runs: the closure of its imports within the ``pipeline`` package,
found by reading the code (``ast``), not by importing it.

The workflow lists these files as each rule's inputs, so editing any module a stage really
imports (directly, through another module, or inside a function) reruns exactly the jobs of that
stage. A stage calls its task as ``impl.<function>`` (``impl = tasks.load(task)``):
:func:`stage_closure` reads which interface functions the stage (and the shared modules it
imports) calls and follows only the imports
of those functions in the task's ``__init__.py`` (which imports its implementation modules inside
the functions), so an edit of the task's evaluation code reruns its evaluations, not its
training. Standard library only, no torch.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

__all__ = ["code_fingerprint", "import_closure", "module_file", "stage_closure", "task_calls"]

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


def _type_checking_only(stmt: ast.stmt) -> bool:
    """``if TYPE_CHECKING:`` (imports for annotations, never run)."""
    test = getattr(stmt, "test", None)
    name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
    return isinstance(stmt, ast.If) and name == "TYPE_CHECKING"


def _nodes(tree: ast.Module, functions: set[str] | None):
    """Every node of ``tree`` but ``if TYPE_CHECKING:`` blocks; with ``functions``, the bodies
    of other top-level functions are skipped too."""
    for stmt in tree.body:
        if _type_checking_only(stmt):
            continue
        if (
            functions is not None
            and isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef)
            and stmt.name not in functions
        ):
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
    """The task interface functions a module calls: every ``impl.<name>`` (the convention of
    the stages and the modules below them: the loaded task is always called ``impl``)."""
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "impl"
    }


def stage_closure(stage: str, task: str, root: Path) -> list[Path]:
    """The files stage ``pipeline.stages.<stage>`` runs for ``task``: its own import closure and
    what the task functions called by it (or by the shared modules it imports, such as
    :mod:`pipeline.training`) import. A task's ``spec`` module is in no closure: the workflow
    reads it, and its facts reach the jobs through their rules' inputs, outputs and commands."""
    module = f"{PACKAGE}.stages.{stage}"
    if module_file(module, root) is None:
        raise ValueError(f"no stage module {module} under {root}")
    own = import_closure([module], root)
    tasks_dir = Path(root, PACKAGE, "tasks")
    calls = set().union(*(task_calls(p) for p in own if tasks_dir not in p.parents))
    if not calls:
        return own
    task_module = f"{PACKAGE}.tasks.{task}"
    return import_closure([module, task_module], root, partial={task_module: calls})


def code_fingerprint(stage: str, task: str, root: Path | None = None) -> str:
    """sha256 over the contents of the files :func:`stage_closure` lists: it changes exactly when
    code the stage runs changes (a training checkpoint of other code is never resumed)."""
    root = Path(__file__).resolve().parents[1] if root is None else Path(root)
    h = hashlib.sha256()
    for path in stage_closure(stage, task, root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()
