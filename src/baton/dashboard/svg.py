"""Server-rendered SVG: a workflow's DAG (layered layout: longest-path layers, barycentric
ordering within a layer, sub-workflow and grafted steps kept together in a labelled box, a
big graft collapsed into one box) and the throughput bar chart.
Every text that came from a user is escaped here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from markupsafe import Markup
from markupsafe import escape as escape_html

from .format import num, shown


def escape(value: Any) -> Markup:
    """HTML-escaped, control characters shown escaped and bidi controls isolated (`shown`)."""
    return escape_html(shown(value))


NODE_W, NODE_H = 176, 44
COL_GAP, ROW_GAP = 64, 16
PAD = 20
MAX_DRAWN = 400
FAILED = {"discarded", "cancelled", "deleted"}


def layers(steps: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Longest-path layering: a step sits one layer right of its deepest dependency. A
    depth-first walk with its own stack (a chain of thousands of steps listed dependents first
    would pass Python's recursion limit); an unknown dependency (pruned) or one that closes a
    cycle counts as layer -1, so nothing loops."""
    deps = {s["name"]: [d for d in s["deps"] if d != s["name"]] for s in steps}
    layer: dict[str, int] = {}
    visiting: set[str] = set()
    for root in deps:
        if root in layer:
            continue
        visiting.add(root)
        stack = [(root, iter(deps[root]))]
        while stack:
            name, pending = stack[-1]
            for dep in pending:
                if dep not in layer and dep not in visiting and dep in deps:
                    visiting.add(dep)
                    stack.append((dep, iter(deps[dep])))
                    break
            else:
                stack.pop()
                visiting.discard(name)
                layer[name] = 1 + max((layer.get(d, -1) for d in deps[name]), default=-1)
    return layer


def order(steps: Sequence[Mapping[str, Any]], layer: Mapping[str, int], sweeps: int = 4) -> list[list[str]]:
    """Steps per layer, ordered to shorten edges: alternate sweeps place each step at the mean
    position of its neighbours in the previous layer; steps of one sub-workflow stay adjacent."""
    names = [s["name"] for s in steps]
    group = {s["name"]: s.get("group") for s in steps}
    deps = {s["name"]: [d for d in s["deps"] if d in layer] for s in steps}
    dependents: dict[str, list[str]] = {n: [] for n in names}
    for n, ds in deps.items():
        for d in ds:
            dependents.setdefault(d, []).append(n)
    count = max(layer.values(), default=-1) + 1
    rows: list[list[str]] = [[] for _ in range(count)]
    for n in names:  # insertion (job id) order to start with
        rows[layer[n]].append(n)

    def place(row: list[str], neighbours: Mapping[str, list[str]], pos: Mapping[str, float]) -> list[str]:
        own = {n: i for i, n in enumerate(row)}
        bary = {}
        for n in row:
            near = [pos[m] for m in neighbours.get(n, ()) if m in pos]
            bary[n] = sum(near) / len(near) if near else float(own[n])
        by_group: dict[Any, list[float]] = {}
        for n in row:
            by_group.setdefault(group.get(n) or ("", n), []).append(bary[n])
        gkey = {g: sum(v) / len(v) for g, v in by_group.items()}
        return sorted(row, key=lambda n: (gkey[group.get(n) or ("", n)], bary[n], own[n]))

    for sweep in range(sweeps):
        if sweep % 2 == 0:
            for i in range(1, count):
                pos = {n: float(j) for j, n in enumerate(rows[i - 1])}
                rows[i] = place(rows[i], deps, pos)
        else:
            for i in range(count - 2, -1, -1):
                pos = {n: float(j) for j, n in enumerate(rows[i + 1])}
                rows[i] = place(rows[i], dependents, pos)
    return rows


def _failed_path(steps: Sequence[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """Edges along which a failure travelled: from a failed step to a dependent the cascade
    cancelled (or that was deleted), recursively."""
    state = {s["name"]: s["state"] for s in steps}
    return {(d, s["name"]) for s in steps for d in s["deps"] if state.get(d) in FAILED and state[s["name"]] in FAILED}


def _rooted(steps: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Grafted roots drawn after their graft step: a grafted step none of whose deps was grafted
    with it gets an edge from the graft step (stored, its dependency is the graft's completion)."""
    names = {s["name"] for s in steps}
    parent = {s["name"]: s.get("parent") for s in steps}
    out: list[Mapping[str, Any]] = []
    for s in steps:
        p = s.get("parent")
        if p in names and p not in s["deps"] and not any(parent.get(d) == p for d in s["deps"]):
            s = {**s, "deps": [p, *s["deps"]]}
        out.append(s)
    return out


def _group_label(group: str, members: Sequence[Mapping[str, Any]]) -> str:
    if any(m.get("parent") == group for m in members):
        return f"{group} (grafted, {len(members)} step{'' if len(members) == 1 else 's'})"
    return group


def dag(
    steps: Sequence[Mapping[str, Any]], base: str, root_failure: str | None = None, workflow_id: str | None = None
) -> Markup:
    """The workflow's steps as an SVG graph, each step linking to its job's page; a collapsed
    graft (`read.collapsed`) is one box with its counts by state, linking to the workflow's jobs."""
    if not steps:
        return Markup('<p class="muted">This workflow has no steps.</p>')
    if len(steps) > MAX_DRAWN:
        return Markup(f'<p class="muted">{len(steps)} steps are too many to draw; the table below lists them all.</p>')
    steps = _rooted(steps)
    layer = layers(steps)
    rows = order(steps, layer)
    xy: dict[str, tuple[int, int]] = {}
    height = 0
    for i, row in enumerate(rows):
        for j, name in enumerate(row):
            xy[name] = (PAD + i * (NODE_W + COL_GAP), PAD + j * (NODE_H + ROW_GAP))
        height = max(height, PAD * 2 + len(row) * (NODE_H + ROW_GAP) - ROW_GAP)
    width = PAD * 2 + len(rows) * (NODE_W + COL_GAP) - COL_GAP
    by_name = {s["name"]: s for s in steps}
    hot = _failed_path(steps)
    out = [
        f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 18}" '
        f'viewBox="0 0 {width} {height + 18}" role="img" aria-label="workflow graph">',
        '<defs><marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L8,4 L0,8 z" class="arrowhead"/></marker>'
        '<marker id="arrow-hot" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L8,4 L0,8 z" class="arrowhead hot"/></marker></defs>',
    ]
    groups: dict[str, list[str]] = {}
    for s in steps:
        if s.get("group"):
            groups.setdefault(s["group"], []).append(s["name"])
    for g, members in sorted(groups.items()):
        label = _group_label(g, [by_name[m] for m in members])
        if len(members) < 2 and label == g:
            continue
        xs = [xy[m][0] for m in members]
        ys = [xy[m][1] for m in members]
        x0, y0 = min(xs) - 8, min(ys) - 8
        x1, y1 = max(xs) + NODE_W + 8, max(ys) + NODE_H + 8
        out.append(
            f'<g class="group"><rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0 + 10}" rx="10"/>'
            f'<text x="{x0 + 8}" y="{y1 + 14}">{escape(label)}</text></g>'
        )
    for s in steps:
        for d in s["deps"]:
            if d not in xy:
                continue
            (x0, y0), (x1, y1) = xy[d], xy[s["name"]]
            sx, sy, ex, ey = x0 + NODE_W, y0 + NODE_H / 2, x1 - 2, y1 + NODE_H / 2
            mid = (sx + ex) / 2
            is_hot = (d, s["name"]) in hot
            cls = "edge hot" if is_hot else "edge"
            marker = "arrow-hot" if is_hot else "arrow"
            out.append(
                f'<path class="{cls}" d="M{sx:.0f},{sy:.0f} C{mid:.0f},{sy:.0f} {mid:.0f},{ey:.0f} {ex:.0f},{ey:.0f}" '
                f'marker-end="url(#{marker})"/>'
            )
    for name, (x, y) in xy.items():
        s = by_name[name]
        if s.get("collapsed"):
            out.append(_collapsed_box(s, x, y, base, workflow_id))
            continue
        state = str(s["state"])
        label = name if len(name) <= 24 else name[:23] + "…"
        sub = state
        if s.get("attempt"):
            sub += f" · attempt {s['attempt']}/{s.get('max_attempts') or '?'}"
        tip = f"{name}: {state}"
        if s.get("waiting"):
            tip += f" — {s['waiting']}"
        if s.get("last_error"):
            tip += f"\nlast error: {s['last_error']}"
        classes = f"step state-{escape(state)}" + (" root-failure" if name == root_failure else "")
        out.append(
            f'<a href="{escape(base)}/jobs/{int(s["job_id"])}" class="step-link" data-step="{escape(name)}">'
            f'<g class="{classes}"><title>{escape(tip)}</title>'
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="7"/>'
            f'<rect class="bar" x="{x}" y="{y}" width="5" height="{NODE_H}" rx="2"/>'
            f'<text class="name" x="{x + 14}" y="{y + 18}">{escape(label)}</text>'
            f'<text class="sub" x="{x + 14}" y="{y + 34}">{escape(sub)}</text></g></a>'
        )
    out.append("</svg>")
    return Markup("".join(out))


def _collapsed_box(s: Mapping[str, Any], x: int, y: int, base: str, workflow_id: str | None) -> str:
    """One box standing for a big graft's grafted steps: how many, and how many in each state."""
    info = s["collapsed"]
    counts = sorted(info["counts"].items(), key=lambda kv: -kv[1])
    graft = str(s["parent"])
    title = f"{graft}: {num(info['steps'])} grafted steps\n" + "\n".join(f"{st}: {num(n)}" for st, n in counts)
    sub = " · ".join(f"{num(n)} {st}" for st, n in counts[:2]) + (" …" if len(counts) > 2 else "")
    label = f"{num(info['steps'])} grafted steps"
    href = f"{escape(base)}/jobs" + (f"?workflow={escape(quote(workflow_id, safe=''))}" if workflow_id else "")
    return (
        f'<a href="{href}" class="step-link collapsed" data-step="{escape(s["name"])}">'
        f'<g class="step state-{escape(s["state"])}"><title>{escape(title)}</title>'
        f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="7" class="stack"/>'
        f'<rect class="bar" x="{x}" y="{y}" width="5" height="{NODE_H}" rx="2"/>'
        f'<text class="name" x="{x + 14}" y="{y + 18}">{escape(label)}</text>'
        f'<text class="sub" x="{x + 14}" y="{y + 34}">{escape(sub)}</text></g></a>'
    )


def throughput_chart(buckets: Sequence[tuple[datetime, int | None]], width: int = 1200, height: int = 160) -> Markup:
    """Completed jobs per minute as bars, oldest left, with a scale line at the maximum; a
    minute not counted yet (None) is a pale placeholder."""
    n = max(len(buckets), 1)
    top = max((v for _, v in buckets if v is not None), default=0)
    left, bottom = 44, 20
    plot_w, plot_h = width - left - 8, height - bottom - 10
    bar = plot_w / n
    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        'role="img" aria-label="completed jobs per minute">',
        f'<line class="axis" x1="{left}" y1="{10 + plot_h}" x2="{left + plot_w}" y2="{10 + plot_h}"/>',
        f'<line class="grid" x1="{left}" y1="10" x2="{left + plot_w}" y2="10"/>',
        f'<text class="tick" x="{left - 6}" y="14" text-anchor="end">{top:,}</text>',
        f'<text class="tick" x="{left - 6}" y="{10 + plot_h}" text-anchor="end">0</text>',
    ]
    for i, (minute, value) in enumerate(buckets):
        x = left + i * bar
        if value is None:
            out.append(
                f'<rect class="pending" x="{x + 1:.1f}" y="10" width="{max(bar - 2, 1):.1f}" height="{plot_h}">'
                f"<title>{minute:%H:%M} UTC: not counted yet</title></rect>"
            )
            continue
        h = 0 if top == 0 else plot_h * value / top
        out.append(
            f'<rect class="bar" x="{x + 1:.1f}" y="{10 + plot_h - h:.1f}" width="{max(bar - 2, 1):.1f}" '
            f'height="{h:.1f}"><title>{minute:%H:%M} UTC: {value:,} completed</title></rect>'
        )
    for i, (minute, _) in enumerate(buckets):
        if i % 10 == 0 or i == len(buckets) - 1:
            out.append(
                f'<text class="tick" x="{left + i * bar + bar / 2:.1f}" y="{height - 4}" '
                f'text-anchor="middle">{minute:%H:%M}</text>'
            )
    out.append("</svg>")
    return Markup("".join(out))
