"""Operations of queue limits (docs/limits.md): the limited fetch, which takes the queue's turn
and fetches only what the global and rate limits leave, and the usage shown by `baton queues`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..engines.base import Conn
from ..job import Job
from ..limits import QueueLimits
from . import workflows

PARTITION_SCAN = (100, 10, 1_000)
"""How many available jobs (in fetch order) a partitioned fetch considers: 10 per free slot,
at least 100, at most 1 000. Partitions whose first job lies deeper wait until the head of
the queue moves on; reading more rows would cost every fetch more."""


def partition_scan(limit: int) -> int:
    """The number of available jobs a partitioned fetch of `limit` jobs considers."""
    low, per_slot, high = PARTITION_SCAN
    return max(low, min(high, per_slot * limit))


@dataclass(slots=True)
class LimitedFetch:
    """What a limited fetch started, whether a limit held jobs back, and when the rate window
    next lets a job start (seconds, None without a rate limit)."""

    jobs: list[Job]
    capped: bool
    reopen_in: float | None


def _params(queue: str, limits: QueueLimits) -> dict[str, Any]:
    params = limits.params()
    params["queue"] = queue
    params["now"] = time.time()  # SQLite only: the host clock, the one julianday('now') reads
    return params


async def fetch_limited_jobs(
    conn: Conn, queue: str, node: str, uuid: str, limit: int, limits: QueueLimits
) -> LimitedFetch:
    """Move up to `limit` available jobs of `queue` to `executing` for producer `uuid`, as many
    as `limits` allow across every node. One statement on PostgreSQL (run it in autocommit or a
    transaction); several on SQLite, which must run in one (BEGIN IMMEDIATE) transaction."""
    params = _params(queue, limits)
    params.update(node=node, uuid=uuid, limit=limit, scan=partition_scan(limit) if limits.partitioned else limit)
    await conn.execute("lock_queue", params)
    await conn.execute("prune_rate_window", params)
    # PostgreSQL has a cheaper statement for limits without partitions; on SQLite one statement
    # serves both (every partition key is [], so each limit is one count).
    simple = not limits.partitioned and conn.dialect == "postgres"
    rows = await conn.fetch("fetch_limited_simple" if simple else "fetch_limited_jobs", params)
    fetched = [r for r in rows if r["id"] is not None]
    jobs = [Job.fetched(r, node, uuid) for r in fetched]
    jobs.sort(key=lambda j: (j.priority, j.id))
    if jobs and limits.rate_limit is not None:
        await conn.execute("record_rate_window", {**params, "ids": [j.id for j in jobs]})
    status = await conn.fetchone("limited_fetch_status", params) or (rows[0] if rows else {})
    steps = [j for j in jobs if j.workflow_id is not None]
    if steps:
        await workflows.load_context(conn, steps)
    capped = bool(status.get("capped")) and len(jobs) < limit
    reopen = status.get("reopen_in")
    return LimitedFetch(jobs, capped, None if reopen is None else max(0.0, float(reopen)))


async def queue_usage(conn: Conn, queue: str, limits: QueueLimits) -> dict[str, Any]:
    """Current usage of `queue` against its limits: jobs executing on every node and starts in
    the rate window, in total and for the busiest partitions (at most 20 each)."""
    params = _params(queue, limits)
    if params["rate_period"] is None:
        params["rate_period"] = 0.0
    running = await conn.fetch("queue_usage_running", params)
    window = await conn.fetch("queue_usage_window", params) if limits.rate_limit is not None else []
    return {
        "executing": sum(int(r["n"]) for r in running),
        "executing_by_partition": {r["key"]: int(r["n"]) for r in running[:20]},
        "window": sum(int(r["n"]) for r in window),
        "window_by_partition": {r["key"]: int(r["n"]) for r in window[:20]},
    }
