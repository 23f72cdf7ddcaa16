"""Jobs as the dashboard lists them: filtered keyset pages, one job with its workflow step
and chain, and failures grouped by worker and exception type."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..engines.base import Conn
from ..job import Job, to_datetime
from ..store import jobs as store

SEARCH_WINDOW = 20_000
"""Ids a page with an unindexed filter (text in args, tag) looks at, newest first."""


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


# States with an index walked newest first: the partial (state, id) and (queue, state, id)
# indexes of migration 003, and the partial index of executing jobs.
INDEXED_STATES = frozenset({"scheduled", "retryable", "suspended", "discarded", "cancelled", "executing"})


@dataclass(frozen=True, slots=True)
class JobFilter:
    """The filters of the jobs page; None means any."""

    state: str | None = None
    queue: str | None = None
    worker: str | None = None
    tag: str | None = None
    q: str | None = None
    workflow: str | None = None

    @property
    def windowed(self) -> bool:
        """Whether a filter without an index of its own is set (pages then look at id
        windows): text and tags always; a worker or a busy state (available, completed)
        unless a workflow, a queue or one of the indexed states narrows the page (migration
        003 indexes (queue, state, id) and, by state, only the states a job waits or fails in)."""
        if self.tag or self.q:
            return True
        if self.workflow or self.queue or self.state in INDEXED_STATES:
            return False
        return bool(self.worker or self.state)

    def params(self) -> dict[str, Any]:
        """Query parameters (the search text as an escaped LIKE pattern)."""
        pattern = None
        if self.q:
            # The engines match the JSON text of args, where a value's `"` reads `\"`, its `\`
            # reads `\\` and a newline `\n`: look for the text as JSON writes it in a string.
            encoded = json.dumps(self.q, ensure_ascii=False)[1:-1]
            escaped = encoded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
        return {
            "state": self.state,
            "queue": self.queue,
            "worker": self.worker,
            "tag": self.tag or None,
            "pattern": pattern,
            "workflow": self.workflow,
        }

    def query(self) -> dict[str, str]:
        """The set filters, for URLs."""
        return {k: v for k in ("state", "queue", "worker", "tag", "q", "workflow") if (v := getattr(self, k))}


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "state": row["state"],
        "queue": row["queue"],
        "worker": row["worker"],
        "args": row["args"],
        "tags": _loads(row["tags"]) or [],
        "attempt": row["attempt"],
        "max_attempts": row["max_attempts"],
        "priority": row["priority"],
        "inserted_at": to_datetime(row["inserted_at"]),
        "scheduled_at": to_datetime(row["scheduled_at"]),
        "attempted_at": to_datetime(row["attempted_at"]),
        "finished_at": to_datetime(row["finished_at"]),
        "last_error": row["last_error"],
        "workflow_id": row["workflow_id"],
    }


async def jobs_page(conn: Conn, f: JobFilter, before: int | None = None, limit: int = 50) -> dict[str, Any]:
    """One page of jobs matching `f`, newest first, with ids below `before`.

    Returns `{jobs, next_before, scanned_from}`: `next_before` continues the listing (None at
    the end). With a text or tag filter a page looks at one window of `SEARCH_WINDOW` ids and
    `scanned_from` says where it stopped, so a rare match never makes a page scan the table."""
    floor = None
    if f.windowed:
        top = before if before is not None else (await conn.fetchone("read_max_job_id"))["id"] + 1  # type: ignore[index]
        floor = max(1, top - SEARCH_WINDOW)
        before = top
    rows = await conn.fetch("read_jobs_page", {**f.params(), "before": before, "floor": floor, "limit": limit})
    jobs = [_summary(r) for r in rows]
    if len(jobs) == limit:
        next_before: int | None = jobs[-1]["id"]
    elif floor is not None and floor > 1:
        next_before = floor  # this window is done; the next page looks at the one below
    else:
        next_before = None
    return {"jobs": jobs, "next_before": next_before, "scanned_from": floor}


async def job_ids(conn: Conn, f: JobFilter, before: int | None, limit: int) -> tuple[list[int], int | None]:
    """Ids of the jobs matching `f` below `before` (bulk actions walk these pages)."""
    page = await jobs_page(conn, f, before, limit)
    return [j["id"] for j in page["jobs"]], page["next_before"]


def job_dict(job: Job) -> dict[str, Any]:
    """A job as plain data."""
    return {
        "id": job.id,
        "state": job.state,
        "queue": job.queue,
        "worker": job.worker,
        "args": job.args,
        "meta": job.meta,
        "tags": list(job.tags),
        "errors": list(job.errors),
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "inserted_at": job.inserted_at,
        "scheduled_at": job.scheduled_at,
        "attempted_at": job.attempted_at,
        "completed_at": job.completed_at,
        "cancelled_at": job.cancelled_at,
        "discarded_at": job.discarded_at,
        "attempted_by": job.attempted_by,
        "workflow_id": job.workflow_id,
        "chain_key": job.chain_key,
    }


async def job_detail(conn: Conn, job_id: int) -> dict[str, Any] | None:
    """One job with its workflow step (name, deps, recorded result) and its chain's nearby links."""
    job = await store.get_job(conn, job_id)
    if job is None:
        return None
    out = job_dict(job)
    out["step"] = None
    step = await conn.fetchone("read_job_step", {"id": job_id})
    if step is not None:
        out["step"] = {
            "workflow_id": step["workflow_id"],
            "label": step["label"],
            "name": step["name"],
            "deps": list(_loads(step["deps"]) or []),
            "reason": step["reason"],
            "pending": step["pending"],
            "recorded": bool(step["recorded"]),
            "result": _loads(step["result"]) if step["recorded"] else None,
        }
        out["workflow_id"] = step["workflow_id"]
    out["chain"] = []
    if job.chain_key is not None:
        out["chain"] = await conn.fetch("read_chain_links", {"key": job.chain_key, "id": job_id, "n": 10})
    return out


FAILURE_SCAN = 5_000


async def failure_groups(conn: Conn, limit: int = 50, scan: int = FAILURE_SCAN) -> dict[str, Any]:
    """Retryable and discarded jobs grouped by (worker, exception type), biggest group first,
    over the newest `scan` jobs of each of the two states."""
    rows = await conn.fetch("read_failure_groups", {"scan": scan, "limit": limit})
    groups = [
        {
            "worker": r["worker"],
            "kind": r["kind"] or "",
            "retryable": int(r["retryable"] or 0),
            "discarded": int(r["discarded"] or 0),
            "last_id": r["last_id"],
            "last_at": to_datetime(r["last_at"]),
            "sample": r["sample"],
        }
        for r in rows
    ]
    return {"groups": groups, "scanned": scan}


async def failure_group_ids(
    conn: Conn, worker: str, kind: str, states: list[str], before: int | None, limit: int
) -> list[int]:
    """Ids of one failure group's jobs in `states`, newest first, below `before`."""
    rows = await conn.fetch(
        "read_failure_ids", {"worker": worker, "kind": kind, "states": states, "before": before, "limit": limit}
    )
    return [r["id"] for r in rows]
