"""The read side: plain-data queries for people looking at Baton (the dashboard, the CLI).

Every function here is an `async def op(conn, ...)` run through the engine seam
(`await app.engine.run(op, ...)`) and returns dicts and lists of JSON-friendly values (times as
`datetime`). Each one does bounded work at any table size: keyset pages, index-only probes,
counts capped and then estimated."""

from typing import Any, TypeVar

from ..engines.base import Conn, Op
from .jobs import JobFilter, failure_group_ids, failure_groups, job_detail, job_ids, jobs_page
from .ops import cron_entries, cron_slots, health
from .overview import change_stamp, leader, nodes, queue_counts, throughput
from .workflows import collapsed, workflow_detail, workflows_page

T = TypeVar("T")


async def bounded(conn: Conn, timeout: float, op: Op[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a read `op` under a statement timeout of `timeout` seconds (PostgreSQL), so a page
    that turns out slow fails fast instead of pinning the database."""
    await conn.execute("set_statement_timeout", {"ms": str(max(1, int(timeout * 1000)))})
    return await op(conn, *args, **kwargs)


__all__ = [
    "JobFilter",
    "bounded",
    "change_stamp",
    "collapsed",
    "cron_entries",
    "cron_slots",
    "failure_group_ids",
    "failure_groups",
    "health",
    "job_detail",
    "job_ids",
    "jobs_page",
    "leader",
    "nodes",
    "queue_counts",
    "throughput",
    "workflow_detail",
    "workflows_page",
]
