"""Workflows as the dashboard lists and draws them: keyset pages with step counts, and one
workflow's steps with their states, edges, failed path and why each waiting step waits."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from ..engines.base import Conn
from ..errors import ValidationError
from ..job import TERMINAL_STATES, to_datetime
from ..store import workflows as wfstore
from ..workflows.status import WorkflowStatus


def _cursor(row: dict[str, Any]) -> str:
    at = row["inserted_at"]
    return f"{at.isoformat() if hasattr(at, 'isoformat') else repr(float(at))}|{row['id']}"


def _parse_cursor(conn: Conn, before: str) -> tuple[Any, str]:
    """`before` (a page's `next_before`: `<inserted_at>|<id>`) as the keyset values the
    engine compares with; ValidationError naming `before` for anything else."""
    at, sep, workflow_id = before.partition("|")
    value: float | datetime | None = None
    if sep and workflow_id:
        try:  # SQLite keeps inserted_at as seconds since the epoch (REAL)
            value = float(at) if conn.dialect == "sqlite" else datetime.fromisoformat(at)
        except ValueError:
            value = None
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    if value is None:
        raise ValidationError(
            "before", f"must be the next_before of a previous page (<inserted_at>|<id>), got {before[:60]!r}"
        )
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value, workflow_id


def _finished_at(row: dict[str, Any]) -> datetime | None:
    """The claim's announced_at, or when the last step ended if later (a reopened workflow
    finished again), as WorkflowStatus.finished_at."""
    times = [t for t in (to_datetime(row["announced_at"]), to_datetime(row["ended_at"])) if t is not None]
    return max(times) if times else None


async def workflows_page(
    conn: Conn, status: str | None = None, label: str | None = None, before: str | None = None, limit: int = 50
) -> dict[str, Any]:
    """Workflows newest first; `status` is running, completed or failed; `before` is the
    `next_before` of the previous page."""
    before_at = before_id = None
    if before:
        before_at, before_id = _parse_cursor(conn, before)
    rows = await conn.fetch(
        "read_workflows_page",
        {"status": status, "label": label, "before_at": before_at, "before_id": before_id, "limit": limit},
    )
    items = []
    for r in rows:
        steps, resolved, failed = int(r["steps"] or 0), int(r["resolved"] or 0), int(r["failed"] or 0)
        state = r["status"]  # as workflow_status reports it (a reopened workflow runs again)
        items.append(
            {
                "id": r["id"],
                "label": r["label"],
                "status": state,
                "inserted_at": to_datetime(r["inserted_at"]),
                "finished_at": None if state == "running" else _finished_at(r),
                "steps": steps,
                "resolved": resolved,
                "failed": failed,
            }
        )
    next_before = _cursor(rows[-1]) if len(rows) == limit else None
    return {"workflows": items, "next_before": next_before}


COLLAPSE_AT = 50
"""A graft with more grafted steps than this is drawn (and listed on the page) as one box."""


def step_dict(status: WorkflowStatus, name: str, waiting: dict[str, str] | None = None) -> dict[str, Any]:
    """One step as plain data, with why it waits (`waiting`: `status.waiting`, computed once
    by a caller that asks for many steps). Grafted steps are grouped under their graft step,
    sub-workflow steps under their prefix."""
    d = status.details[name]
    if waiting is None:
        waiting = status.waiting
    return {
        "name": name,
        "state": d.state,
        "deps": list(d.deps),
        "job_id": d.job_id,
        "queue": d.queue,
        "worker": d.worker,
        "attempt": d.attempt,
        "max_attempts": d.max_attempts,
        "reason": d.reason,
        "last_error": d.last_error,
        "queued_ms": d.queued_ms,
        "run_ms": d.run_ms,
        "waiting": waiting.get(name) if d.state not in TERMINAL_STATES else None,
        "graft": d.graft,
        "parent": d.parent,
        "group": d.parent if d.parent is not None else name.split(".", 1)[0] if "." in name else None,
    }


async def workflow_detail(conn: Conn, workflow_id: str) -> dict[str, Any] | None:
    """A workflow with every step (name, state, deps, job, why it waits) or None."""
    wf, rows = await wfstore.status_rows(conn, workflow_id)
    if wf is None:
        return None
    status = WorkflowStatus.from_rows(wf, rows)
    waiting = status.waiting
    steps = [step_dict(status, n, waiting) for n in status.steps]
    # Declared deps name steps of the same (sub-)workflow; the stored edges also hold the
    # ones a sub-workflow's roots inherit from the step they stand for.
    name_of = {s["job_id"]: s["name"] for s in steps}
    edges = await conn.fetch("read_workflow_edges", {"ids": list(name_of)})
    extra: dict[str, list[str]] = {}
    for e in edges:
        dep, step = name_of.get(e["dep_job_id"]), name_of.get(e["job_id"])
        if dep is not None and step is not None:
            extra.setdefault(step, []).append(dep)
    for s in steps:
        known = set(s["deps"])
        for dep in sorted(extra.get(s["name"], ()), key=lambda n: status.details[n].job_id):
            if dep not in known:
                known.add(dep)
                s["deps"].append(dep)
    grafts: dict[str, dict[str, Any]] = {}
    for s in steps:
        if s["parent"] is not None:
            g = grafts.setdefault(s["parent"], {"name": s["parent"], "steps": 0, "counts": {}})
            g["steps"] += 1
            g["counts"][s["state"]] = g["counts"].get(s["state"], 0) + 1
    root = None
    failed = [s for s in steps if s["state"] in ("discarded",)] or [s for s in steps if s["state"] == "deleted"]
    if failed:
        root = min(failed, key=lambda s: s["job_id"])["name"]
    return {
        "workflow_id": status.workflow_id,
        "label": status.label,
        "status": status.status,
        "finished": status.finished,
        "counts": status.counts,
        "inserted_at": status.inserted_at,
        "finished_at": status.finished_at,
        "announced_by": status.announced_by,
        "steps": steps,
        "failed_steps": status.failed_steps,
        "root_failure": root,
        "grafts": list(grafts.values()),
    }


def collapsed(detail: dict[str, Any], limit: int = COLLAPSE_AT) -> list[dict[str, Any]]:
    """The workflow's steps to draw and list on its page: the grafted steps of a graft with more
    than `limit` of them (and the steps grafted under those) become one step, named
    `<graft>.*`, with `collapsed` = {"steps": n, "counts": {state: n}}; edges to them point to it."""
    big = {g["name"]: g for g in detail["grafts"] if g["steps"] > limit}
    if not big:
        return list(detail["steps"])
    by_name = {s["name"]: s for s in detail["steps"]}

    def owner(name: str) -> str | None:
        """The outermost collapsed graft `name` was grafted under, if any."""
        found, parent = None, by_name[name]["parent"] if name in by_name else None
        while parent is not None:
            if parent in big:
                found = parent
            parent = by_name[parent]["parent"] if parent in by_name else None
        return found

    hidden = {s["name"]: g for s in detail["steps"] if (g := owner(s["name"])) is not None}
    boxes: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for s in detail["steps"]:
        g = hidden.get(s["name"])
        if g is not None:
            box = boxes.get(g)
            if box is None:
                box = boxes[g] = {
                    "name": f"{g}.*",
                    "state": _summary_state(big[g]["counts"]),
                    "deps": [g],
                    "job_id": None,
                    "group": None,
                    "graft": False,
                    "parent": g,
                    "collapsed": {"steps": 0, "counts": {}},
                }
                out.append(box)
            box["collapsed"]["steps"] += 1
            counts = box["collapsed"]["counts"]
            counts[s["state"]] = counts.get(s["state"], 0) + 1
            continue
        deps = dict.fromkeys(f"{hidden[d]}.*" if d in hidden else d for d in s["deps"])
        out.append({**s, "deps": list(deps)})
    return out


def _summary_state(counts: dict[str, int]) -> str:
    """The state a collapsed box shows: failed if any failed, else running, else completed."""
    for state in ("discarded", "cancelled", "deleted", "executing", "retryable", "available", "scheduled"):
        if counts.get(state):
            return state
    return "suspended" if counts.get("suspended") else "completed"
