"""The package's shape: no import cycle, nothing imports the CLI, folders as the layers they name.

Walks every module's import statements (also those inside functions: a lazy import is still a
dependency) with `ast`, so a cycle fails here even when no test happens to import both ends.
"""
from __future__ import annotations

import ast
from pathlib import Path

import nanogpt_viz

ROOT = Path(nanogpt_viz.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and t != "nanogpt_viz":
                    graph[name].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    out, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                out.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return out


def test_the_walk_sees_the_imports():
    g = _graph()
    assert "nanogpt_viz.data.batching" in g["nanogpt_viz.engine.trainer"]
    assert "nanogpt_viz.engine.kernels" in g["nanogpt_viz.engine.kernels.gelu"]
    assert "nanogpt_viz.ui.app" in g["nanogpt_viz.cli"]  # a lazy import, inside a function
    # and the cycle finder finds a planted cycle
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_nothing_imports_the_cli():
    g = _graph()
    assert sorted(m for m, deps in g.items() if "nanogpt_viz.cli" in deps) == ["nanogpt_viz.__main__"]


def test_layers():
    """data and engine and run never reach into the window; the window never reaches into the CLI."""
    g = _graph()
    for m, deps in g.items():
        if m.startswith(("nanogpt_viz.data", "nanogpt_viz.engine", "nanogpt_viz.run", "nanogpt_viz.config",
                         "nanogpt_viz.viewmodel")):
            assert not any(d.startswith("nanogpt_viz.ui") for d in deps), (m, deps)
        if m.startswith("nanogpt_viz.data"):
            assert not any(d.startswith(("nanogpt_viz.run", "nanogpt_viz.viewmodel")) for d in deps), (m, deps)
