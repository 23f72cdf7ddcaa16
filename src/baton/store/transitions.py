"""State changes whose follow-ups reach beyond the jobs table, each in one transaction: fetch
(loads the context of workflow steps), ack and cancel (which settle what a terminal job
unblocks: workflow releases, cascades and completion claims, chain releases). This module sits
above `jobs`, `workflows` and `chains` and ties them together; none of them imports it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..engines.base import Conn, Row
from ..job import TERMINAL_STATES, Job, UsageRecord, dumps
from . import chains, usage, workflows
from .effects import Cascaded, Effects, publish
from .jobs import Ack, Dropped, release_on_shutdown

# --------------------------------------------------------------------------- fetch


# A position in a queue's fetch order: (priority, scheduled_at, id) of a fetched job, with
# scheduled_at exactly as the database returned it.
FetchKey = tuple[int, Any, int]


async def fetch_jobs(conn: Conn, queue: str, node: str, uuid: str, limit: int) -> list[Job]:
    """Move up to `limit` available jobs of `queue` to `executing` for producer `uuid`."""
    return (await fetch_next(conn, queue, node, uuid, limit))[0]


async def fetch_next(
    conn: Conn, queue: str, node: str, uuid: str, limit: int, after: FetchKey | None = None
) -> tuple[list[Job], FetchKey | None]:
    """`fetch_jobs`, optionally only among jobs after `after` in fetch order; also returns the
    position of the last job fetched.

    Why: on PostgreSQL every fetched job leaves a dead entry at the head of the fetch index
    until VACUUM removes it, and a scan from the start steps over all of them — with a backlog
    of a million jobs, more each second. A producer that keeps fetching full batches starts
    its next scan after its last job instead; it scans from the start again whenever it is
    woken (a job may have become available before that position) and at least once per poll
    interval, so a job released or inserted behind the position waits no longer than polling."""
    params: dict[str, Any] = {
        "queue": queue,
        "node": node,
        "uuid": uuid,
        "limit": limit,
        "channel": conn.channel("workflow"),
    }
    if after is None:
        rows = await conn.fetch("fetch_jobs", params)
    else:
        params.update(after_priority=after[0], after_scheduled_at=after[1], after_id=after[2])
        rows = await conn.fetch("fetch_jobs_after", params)
    if not rows:
        return [], None
    last = max((r["priority"], r["scheduled_at"], r["id"]) for r in rows)
    jobs = [Job.fetched(r, node, uuid) for r in rows]
    jobs.sort(key=lambda j: (j.priority, j.id))
    steps = [j for j in jobs if j.workflow_id is not None]
    if steps:
        if "ctx" in rows[0]:  # PostgreSQL returned each step's context with it
            by_id = {r["id"]: r["ctx"] for r in rows}
            workflows.apply_context_docs(steps, by_id)
        else:
            await workflows.load_context(conn, steps)
    return jobs, last


@dataclass(slots=True)
class AckResult:
    """What an ack transaction changed, for the caller's post-commit work."""

    acked: list[Ack] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    effects: Effects = field(default_factory=lambda: Effects())
    # Released steps handed straight to the acking node's producers (rows as fetch_jobs
    # returns them), by producer uuid: already `executing`, to be run without a fetch.
    taken: dict[str, list[Job]] = field(default_factory=dict)


async def ack_jobs(
    conn: Conn, acks: Sequence[Ack], node: str, origin: str = "", take: Sequence[tuple[str, str, int]] = ()
) -> AckResult:
    """Apply attempt outcomes, fenced by state, attempt and producer; then release workflow
    dependents and chain links, cascade failures, and claim finished workflows — one transaction.

    `take` offers free slots of the acking node's producers as (queue, producer uuid, n): on
    PostgreSQL, steps that a batch of plain completions releases in those queues start right
    away for that producer (`AckResult.taken`), so the next hop of a workflow needs no fetch."""
    result = AckResult(effects=Effects(origin=origin, wakes_locally=bool(origin)))
    if not acks:
        return result
    if conn.dialect == "postgres" and completions_that_release(acks):
        claimed = await workflows.complete_steps(conn, acks, node, result.effects, result.acked, take)
        if claimed:
            uuids = {queue: uuid for queue, uuid, _ in take}
            jobs = [Job.fetched(r, node, uuids[r["queue"]]) for r in claimed]
            taken_steps = [j for j in jobs if j.workflow_id is not None]
            if taken_steps:
                workflows.apply_context_docs(taken_steps, {r["id"]: r["ctx"] for r in claimed})
            for job in jobs:
                result.taken.setdefault(uuids[job.queue], []).append(job)
        await _fenced(conn, acks, result)
        return result
    simple: list[Ack] = []
    other: list[Ack] = []
    for a in acks:
        (simple if _plain(a) else other).append(a)
    rows: list[Row] = []
    if simple:
        rows += await conn.fetch(
            "complete_jobs",
            {
                "ids": [a.job.id for a in simple],
                "attempts": [a.job.attempt for a in simple],
                "uuids": [(a.job.attempted_by or ["", ""])[-1] for a in simple],
            },
        )
    if other:
        rows += await conn.fetch("ack_jobs", {"acks": dumps([a.row() for a in other])})
    applied = {r["id"] for r in rows}
    by_id = {a.job.id: a for a in acks}
    result.acked = [by_id[i] for i in applied]
    await _fenced(conn, acks, result)

    steps = [a for a in result.acked if a.job.workflow_id is not None]
    if steps:
        await workflows.record_attempts(conn, steps)
    logs = [a for a in result.acked if a.job._logs]
    if logs:
        await workflows.insert_logs(conn, logs)
    await _graft(conn, result)
    used = [a for a in result.acked if a.usage]
    if used:
        await usage.record_usage(conn, used)
    terminal = [(a.job, a.state) for a in result.acked if a.state in TERMINAL_STATES]
    await settle(conn, terminal, node, result.effects)
    return result


async def hand_back(
    conn: Conn, ids: Sequence[int], uuid: str, node: str, used: Sequence[tuple[Job, Sequence[UsageRecord]]] = ()
) -> tuple[list[Job], list[tuple[Job, Sequence[UsageRecord]]]]:
    """A stopping producer hands back the attempts it could not finish (`release_on_shutdown`:
    `available` again, one more attempt allowed) and stores the usage they recorded (`used`:
    the job as it ran, its records), in one transaction. Only the attempts the hand-back
    applied to write usage: one no longer executing for `uuid` at its attempt (cancelled,
    rescued meanwhile) writes nothing, like a fenced ack. Their own acks are never written (the
    node took the attempts away first), so no record is stored twice. Returns the jobs handed
    back and the usage stored."""
    released = await release_on_shutdown(conn, ids, uuid, node)
    applied = {(j.id, j.attempt) for j in released}
    stored = [(job, records) for job, records in used if records and (job.id, job.attempt) in applied]
    await usage.record_attempts_usage(conn, stored)
    return released, stored


def _plain(a: Ack) -> bool:
    """A completion with nothing to write but the state (the common case)."""
    return a.state == "completed" and a.error is None and a.meta is None and not a.extra_attempts


def completions_that_release(acks: Sequence[Ack]) -> bool:
    """True when every ack of the batch is a plain completion (no logs, usage or graft) and at
    least one is a workflow step or a chain link, whose completion releases what comes next: on
    PostgreSQL, `ack_jobs` then writes the whole batch in one statement (complete_steps)."""
    releases = False
    for a in acks:
        job = a.job
        if not _plain(a) or job._logs or a.usage or a.graft is not None:
            return False
        releases = releases or job.workflow_id is not None or job.chain_key is not None
    return releases


def one_statement(acks: Sequence[Ack], dialect: str) -> bool:
    """True when `ack_jobs` writes `acks` in one statement, which is atomic without a
    transaction: plain jobs' completions and errors, and on PostgreSQL plain completions of
    workflow steps and chain links too."""
    if all(a.job.workflow_id is None and a.job.chain_key is None and not a.job._logs and a.usage is None for a in acks):
        return True
    return dialect == "postgres" and completions_that_release(acks)


async def _fenced(conn: Conn, acks: Sequence[Ack], result: AckResult) -> None:
    """Record the acks that did not apply (fenced) in `result.dropped`, with the reason."""
    applied = {a.job.id for a in result.acked}
    missing = [a for a in acks if a.job.id not in applied]
    if missing:
        current = {r["id"]: r for r in await conn.fetch("job_states", {"ids": [a.job.id for a in missing]})}
        for a in missing:
            row = current.get(a.job.id)
            if row is None:
                reason, state = "missing", None
            elif row["state"] == "cancelled":
                reason, state = "cancelled", row["state"]
            elif row["attempt"] != a.job.attempt or row["state"] == "executing":
                reason, state = "rescued", row["state"]
            else:
                reason, state = "finished", row["state"]
            result.dropped.append(Dropped(a.job, state, reason))


async def _graft(conn: Conn, result: AckResult) -> None:
    """Insert the steps of graft steps whose ack applied — before settling, so the graft's
    dependents wait for them. An ack that was fenced (retried, late, rescued) grafts nothing."""
    grafts = [a for a in result.acked if a.graft is not None]
    if grafts:
        await workflows.graft(conn, grafts, result.effects)


async def settle(conn: Conn, terminal: Sequence[tuple[Job, str]], node: str, effects: Effects) -> None:
    """Follow-ups of jobs that just reached a terminal state: workflow releases, cascades and
    completion claims; chain releases and halts; wake-up notifications."""
    steps = [(j.id, state) for j, state in terminal if j.workflow_id is not None]
    links = [(j, state) for j, state in terminal if j.chain_key is not None]
    if steps:
        await workflows.resolve(conn, steps, node, effects)
    if links:
        await chains.advance(conn, links, effects)
    await publish(conn, effects)


# --------------------------------------------------------------------------- cancel


async def cancel_jobs(
    conn: Conn,
    node: str,
    origin: str = "",
    *,
    ids: Sequence[int] | None = None,
    queue: str | None = None,
    worker: str | None = None,
    states: Sequence[str] | None = None,
    workflow_id: str | None = None,
    reason: str = "cancelled",
    repair: str | None = None,
) -> tuple[list[Job], Effects]:
    """Cancel every non-terminal job matching the filters; executing ones are signalled.
    Returns the cancelled jobs and the effects (cascades, releases) to act on after commit.

    A cancel of a workflow (`workflow_id`) cancels every step it has when it commits, also
    steps that other transactions were adding meanwhile (PostgreSQL; SQLite runs one writer at
    a time). An append_workflow holds the workflow's step lock (lock_workflow_steps) for its
    whole transaction: the cancel takes it shared before anything else, so it waits for an
    append under way and later appends wait for it (and then find the workflow finished). A
    graft step's ack inserts its grafted steps in the transaction that holds the graft step's
    row: cancel_targets waits for that row, but its snapshot (READ COMMITTED, one per statement)
    predates the ack's commit and misses the grafted steps. So the targets are picked again, each
    time in a new statement, until none match (cancel_candidates, without locks). The passes end:
    a pass finds only steps committed after the previous one, by a graft ack it waited for (or
    one in flight then); a graft step this cancel locked grafts nothing, and grafts nest finitely.
    Every job row is locked before the workflow's nodes and row (settle), the order acks lock
    them in."""
    filters = {
        "ids": list(ids) if ids is not None else None,
        "queue": queue,
        "worker": worker,
        "states": list(states) if states is not None else None,
        "workflow_id": workflow_id,
    }
    eff = Effects(origin=origin)
    if workflow_id is not None:
        await conn.execute("share_workflow_steps", {"id": workflow_id})
    error = {"error": reason, "traceback": None}
    if repair is not None:
        error["reason"] = repair
    jobs: list[Job] = []
    prev: dict[int, str] = {}
    while True:
        targets = await conn.fetch("cancel_targets", filters)
        if targets:
            rows = await conn.fetch(
                "cancel_jobs",
                {"ids": [t["id"] for t in targets], "error": dumps(error), "repair": repair},
            )
            jobs.extend(Job.from_row(r) for r in rows)
            prev.update((t["id"], t["state"]) for t in targets)
        if workflow_id is None:
            break
        found = await conn.fetchone("cancel_candidates", filters)
        if found is None or not found["found"]:
            break
    if not jobs:
        return [], eff
    eff.signal_cancel.extend(j.id for j in jobs if prev.get(j.id) == "executing")
    if repair == "orphaned_step":
        # Cancelled because a dependency vanished: the worker's after_cancelled hook hears "deleted".
        eff.cascaded.extend(Cascaded(j, "deleted") for j in jobs if j.workflow_id is not None)
    await workflows.announce_steps(conn, jobs, "cancelled")
    await settle(conn, [(j, "cancelled") for j in jobs], node, eff)
    return jobs, eff


async def discard_jobs(
    conn: Conn, node: str, origin: str, ids: Sequence[int], reason: str
) -> tuple[list[Job], Effects]:
    """Discard jobs that wait to run (available, scheduled, retryable, suspended) by hand, with
    `reason` in their errors; workflow dependents and chains follow as for any discarded job."""
    eff = Effects(origin=origin)
    rows = await conn.fetch("discard_jobs", {"ids": list(ids), "error": dumps({"error": reason, "traceback": None})})
    jobs = [Job.from_row(r) for r in rows]
    if jobs:
        await workflows.announce_steps(conn, jobs, "discarded")
        await settle(conn, [(j, "discarded") for j in jobs], node, eff)
    return jobs, eff
