"""The package's layers depend one way: no module of `baton` imports, directly or through
others, a module that imports it back. Imports are read from the source with `ast` (those
under `TYPE_CHECKING` and inside functions included), so a circle fails here before it can
tangle the code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "baton"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The `baton` modules `name` imports (a package's `__init__` counts as its module)."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    out = set()
    for target in found:
        # `import baton.store.jobs` names the module; fall back to the nearest known parent.
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]], ignore: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), `ignore`d nodes left out."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w in ignore:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index and v not in ignore:
            visit(v)
    return out


def test_no_module_circles() -> None:
    graph = _graph()
    assert "baton.store.jobs" in graph and "baton.app" in graph  # the walk found the package
    cycles = _cycles(graph, set())
    assert cycles == [], "import circles between baton modules:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        ("baton.plugins", "baton.app"),
        ("baton.runtime", "baton.app"),
        ("baton.store", "baton.app"),
        ("baton.store", "baton.runtime"),
        ("baton.store", "baton.plugins"),
        ("baton.engines", "baton.store"),
        ("baton.workflows", "baton.store"),
        ("baton.demo", "baton.cli"),
        ("baton.store.jobs", "baton.store.workflows"),
        ("baton.store.jobs", "baton.store.chains"),
        ("baton.store.chains", "baton.store.workflows"),
        ("baton.workflows.render", "baton.workflows.builder"),
    ],
)
def test_lower_layer_never_imports_upper(lower: str, upper: str) -> None:
    """The one-way rules of docs/architecture.md, pairs the circles of round 1 broke."""
    graph = _graph()
    offenders = sorted(
        (m, t)
        for m, targets in graph.items()
        if m == lower or m.startswith(lower + ".")
        for t in targets
        if t == upper or t.startswith(upper + ".")
    )
    assert offenders == [], f"{lower} must not import {upper}: {offenders}"


def test_a_planted_circle_is_found(tmp_path: Path) -> None:
    """The checker itself sees a circle (so the test above can fail)."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph, set()) == [["a", "b", "c"]]


def test_importing_plugins_and_cli_needs_no_circle() -> None:
    """`import baton.plugins, baton.cli` in a fresh interpreter works and loads app last-first."""
    code = "import baton.plugins, baton.cli, baton.host, baton.store.transitions; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
