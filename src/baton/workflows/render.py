"""Draw a workflow graph as Mermaid or Graphviz DOT (sub-workflows as subgraphs/clusters).
It draws a plain `Graph` (step name -> worker, deps, nested graph), so it knows nothing of
how a workflow is built; `Workflow.graph()` makes one."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .._printable import printable


@dataclass(slots=True)
class GraphStep:
    """One step to draw: its worker (empty for a sub-workflow), its deps, its nested graph; a
    graft step (drawn as a hexagon) with the steps it grafted, once it ran."""

    worker: str
    deps: tuple[str, ...]
    sub: Graph | None = None
    graft: bool = False
    grafted: Graph | None = None


@dataclass(slots=True)
class Graph:
    """A workflow as data to draw: its label and its steps in declaration order."""

    label: str | None
    steps: dict[str, GraphStep] = field(default_factory=dict)


class _Ids:
    """Readable node ids (`report.x` -> `n_report_x`), made unique with a suffix when two
    names sanitise alike (`report_x` next to `report.x`)."""

    def __init__(self) -> None:
        self._ids: dict[str, str] = {}
        self._taken: set[str] = set()

    def __call__(self, name: str) -> str:
        found = self._ids.get(name)
        if found is None:
            base = found = "n_" + re.sub(r"[^A-Za-z0-9_]", "_", name)
            n = 1
            while found in self._taken:
                n += 1
                found = f"{base}_{n}"
            self._ids[name] = found
            self._taken.add(found)
        return found


def _label(text: str) -> str:
    """A name as a quoted label: `"` becomes `'`, control characters show escaped (`\\x1b`)."""
    return printable(text).replace('"', "'")


def _sinks(wf: Graph, prefix: str, name: str) -> list[str]:
    step = wf.steps[name]
    if step.grafted is not None and step.grafted.steps:  # dependents wait for the grafted steps
        inner = step.grafted
        depended = {d for s in inner.steps.values() for d in s.deps}
        return [m for s in inner.steps if s not in depended for m in _sinks(inner, prefix + name + ".", s)]
    if step.sub is None:
        return [prefix + name]
    inner = step.sub
    depended = {d for s in inner.steps.values() for d in s.deps}
    return [m for s in inner.steps if s not in depended for m in _sinks(inner, prefix + name + ".", s)]


def _roots(wf: Graph, prefix: str, name: str) -> list[str]:
    step = wf.steps[name]
    if step.sub is None:
        return [prefix + name]
    inner = step.sub
    return [m for s, st in inner.steps.items() if not st.deps for m in _roots(inner, prefix + name + ".", s)]


def to_mermaid(wf: Graph) -> str:
    """A `flowchart TD` diagram."""
    lines = ["flowchart TD"]
    _id = _Ids()

    def emit(w: Graph, prefix: str, indent: str) -> None:
        for name, step in w.steps.items():
            full = prefix + name
            if step.sub is not None:
                lines.append(f'{indent}subgraph {_id(full)} ["{_label(name)}"]')
                emit(step.sub, full + ".", indent + "    ")
                lines.append(f"{indent}end")
            else:
                worker = step.worker.rsplit(".", 1)[-1]
                text = f'"{_label(name)}<br/><small>{_label(worker)}</small>"'
                lines.append(f"{indent}{_id(full)}{{{{{text}}}}}" if step.graft else f"{indent}{_id(full)}[{text}]")
            if step.grafted is not None and step.grafted.steps:
                lines.append(f'{indent}subgraph {_id(full + "__grafted")} ["{_label(name)} (grafted)"]')
                emit(step.grafted, full + ".", indent + "    ")
                lines.append(f"{indent}end")
                for inner, inner_step in step.grafted.steps.items():
                    if not inner_step.deps:
                        for dst in _roots(step.grafted, full + ".", inner):
                            lines.append(f"{indent}{_id(full)} --> {_id(dst)}")
        for name, step in w.steps.items():
            for dep in step.deps:
                if dep not in w.steps:
                    continue
                for src in _sinks(w, prefix, dep):
                    for dst in _roots(w, prefix, name):
                        lines.append(f"{indent}{_id(src)} --> {_id(dst)}")

    emit(wf, "", "    ")
    return "\n".join(lines) + "\n"


def to_dot(wf: Graph) -> str:
    """A `digraph` for Graphviz."""
    title = _label(wf.label or "workflow")
    lines = [f'digraph "{title}" {{', "    rankdir=TB;", "    node [shape=box, style=rounded];"]
    _id = _Ids()

    def emit(w: Graph, prefix: str, indent: str) -> None:
        for name, step in w.steps.items():
            full = prefix + name
            if step.sub is not None:
                lines.append(f"{indent}subgraph cluster_{_id(full)} {{")
                lines.append(f'{indent}    label="{_label(name)}";')
                emit(step.sub, full + ".", indent + "    ")
                lines.append(f"{indent}}}")
            else:
                shape = ", shape=hexagon" if step.graft else ""
                lines.append(f'{indent}{_id(full)} [label="{_label(name)}"{shape}];')
            if step.grafted is not None and step.grafted.steps:
                lines.append(f"{indent}subgraph cluster_{_id(full + '__grafted')} {{")
                lines.append(f'{indent}    label="{_label(name)} (grafted)";')
                emit(step.grafted, full + ".", indent + "    ")
                lines.append(f"{indent}}}")
                for inner, inner_step in step.grafted.steps.items():
                    if not inner_step.deps:
                        for dst in _roots(step.grafted, full + ".", inner):
                            lines.append(f"{indent}{_id(full)} -> {_id(dst)};")
        for name, step in w.steps.items():
            for dep in step.deps:
                if dep not in w.steps:
                    continue
                for src in _sinks(w, prefix, dep):
                    for dst in _roots(w, prefix, name):
                        lines.append(f"{indent}{_id(src)} -> {_id(dst)};")

    emit(wf, "", "    ")
    lines.append("}")
    return "\n".join(lines) + "\n"
