"""The architecture you can see from the folders: which package may import which, and no import circle.

Every ``import`` statement counts, deferred ones inside functions included: an import circle held apart
by a deferred import is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("distill", "hwprofile", "nas", "search_spaces")
# `nas` is the only package that imports the other three; these three import none of each other.
ALLOWED = {"distill": set(), "hwprofile": set(), "search_spaces": set(),
           "nas": {"distill", "hwprofile", "search_spaces"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that ``path`` imports (``from pkg import mod`` counts as ``pkg.mod`` when that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name)):
            return found
    return None


def test_no_import_circle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_what_the_design_allows(package: str) -> None:
    crossing = sorted({f"{name} -> {target}" for name, targets in _graph().items() if name.split(".")[0] == package
                       for target in targets
                       if target.split(".")[0] != package and target.split(".")[0] not in ALLOWED[package]})
    assert not crossing, crossing


def test_the_walker_sees_deferred_imports_and_circles(tmp_path: Path) -> None:
    graph = {"a": {"a.b"}, "a.b": {"a.c"}, "a.c": {"a.b"}}
    assert _cycle(graph) == ["a.b", "a.c", "a.b"]
    assert _cycle({"a": {"a.b"}, "a.b": {"a.c"}, "a.c": set()}) is None
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from distill.train import TrainConfig\n")
    assert _imports("distill.teachers", source, {"distill", "distill.train"}) == {"distill.train"}
