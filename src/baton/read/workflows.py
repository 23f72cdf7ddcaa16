"""Workflows as the dashboard lists and draws them: keyset pages with step counts, and one
workflow's steps with their states, edges, failed path and why each waiting step waits."""

from __future__ import annotations

from typing import Any

from ..engines.base import Conn
from ..job import TERMINAL_STATES, to_datetime
from ..store import workflows as wfstore
from ..workflows.status import WorkflowStatus


def _cursor(row: dict[str, Any]) -> str:
    at = row["inserted_at"]
    return f"{at.isoformat() if hasattr(at, 'isoformat') else repr(float(at))}|{row['id']}"


async def workflows_page(
    conn: Conn, status: str | None = None, label: str | None = None, before: str | None = None, limit: int = 50
) -> dict[str, Any]:
    """Workflows newest first; `status` is running, completed or failed; `before` is the
    `next_before` of the previous page."""
    before_at = before_id = None
    if before:
        before_at, _, before_id = before.partition("|")
    rows = await conn.fetch(
        "read_workflows_page",
        {"status": status, "label": label, "before_at": before_at, "before_id": before_id, "limit": limit},
    )
    items = []
    for r in rows:
        steps, resolved, failed = int(r["steps"] or 0), int(r["resolved"] or 0), int(r["failed"] or 0)
        state = r["completion_status"] or "running"
        items.append(
            {
                "id": r["id"],
                "label": r["label"],
                "status": state,
                "inserted_at": to_datetime(r["inserted_at"]),
                "finished_at": to_datetime(r["announced_at"]),
                "steps": steps,
                "resolved": resolved,
                "failed": failed,
            }
        )
    next_before = _cursor(rows[-1]) if len(rows) == limit else None
    return {"workflows": items, "next_before": next_before}


def step_dict(status: WorkflowStatus, name: str) -> dict[str, Any]:
    """One step as plain data, with why it waits."""
    d = status.details[name]
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
        "waiting": status.waiting.get(name) if d.state not in TERMINAL_STATES else None,
        "group": name.split(".", 1)[0] if "." in name else None,
    }


async def workflow_detail(conn: Conn, workflow_id: str) -> dict[str, Any] | None:
    """A workflow with every step (name, state, deps, job, why it waits) or None."""
    wf, rows = await wfstore.status_rows(conn, workflow_id)
    if wf is None:
        return None
    status = WorkflowStatus.from_rows(wf, rows)
    steps = [step_dict(status, n) for n in status.steps]
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
        for dep in sorted(extra.get(s["name"], ()), key=lambda n: status.details[n].job_id):
            if dep not in s["deps"]:
                s["deps"].append(dep)
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
        "finished_at": status.announced_at,
        "announced_by": status.announced_by,
        "steps": steps,
        "failed_steps": status.failed_steps,
        "root_failure": root,
    }
