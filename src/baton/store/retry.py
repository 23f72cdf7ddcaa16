"""Retrying jobs: finished or retryable jobs back to available; finished workflow steps only
with their dependencies met or still to come (suspended until they complete), and unresolved
again so that their next ending resolves them like any step's."""

from __future__ import annotations

from collections.abc import Sequence

from ..engines.base import Conn, Row
from ..job import Job, dumps
from .jobs import StepBlocked, UniqueHeld
from .workflows import edge_satisfied


async def retry_jobs(conn: Conn, ids: Sequence[int]) -> tuple[list[Job], list[UniqueHeld | StepBlocked]]:
    """Move terminal or retryable jobs back to `available`, with at least one attempt left.

    A finished workflow step goes back only if none of its dependencies ended cancelled,
    discarded or deleted without the step ignoring it (else StepBlocked: it would run without
    that result; retry the dependency first); to `suspended` while a dependency has not
    completed yet, released as any step when it has (reopen_steps).

    A finished (completed, discarded, cancelled) job with a unique key is not retried while
    another job with that key is waiting or running (available, scheduled, suspended,
    executing, retryable): that would be two live jobs of one key, which `unique` promises
    never to make. Nor is more than one finished job of a key retried by one call (the lowest
    id is). Those come back as UniqueHeld; a retryable job, already live, is always retried.
    Whatever the worker's unique `states` and `period` were at insert (the row keeps only the
    key), a live holder blocks the retry: finish or cancel it first."""
    candidates = await conn.fetch("retry_candidates", {"ids": list(ids)})
    revived = [r for r in candidates if r["unique_key"] is not None and r["state"] != "retryable"]
    held: list[UniqueHeld] = []
    if revived:
        keys = sorted({r["unique_key"] for r in revived})
        # The same locks as an insert of these keys (unique_conflicts then insert), so a
        # concurrent insert or retry of a key sees this retry, or this one sees it.
        await conn.execute("lock_keys", {"keys": [f"u:{k}" for k in keys]})
        holders = {
            r["unique_key"]: (int(r["id"]), str(r["state"]))
            for r in await conn.fetch("unique_holders", {"keys": keys, "ids": [int(c["id"]) for c in candidates]})
        }
        for r in revived:  # in id order
            holder = holders.get(r["unique_key"])
            if holder is None:
                holders[r["unique_key"]] = (int(r["id"]), "retried")
            else:
                held.append(UniqueHeld(int(r["id"]), *holder))
    refused = {h.id for h in held}
    retry = [int(r["id"]) for r in candidates if int(r["id"]) not in refused]
    # Finished workflow steps: only with their dependencies met or still to come (reopen_steps).
    steps = [
        int(r["id"])
        for r in candidates
        if r["workflow_id"] is not None and r["state"] != "retryable" and int(r["id"]) not in refused
    ]
    suspend: list[int] = []
    blocked: list[StepBlocked] = []
    if steps:
        suspend, blocked = await reopen_steps(conn, steps)
        retry = [i for i in retry if i not in {b.id for b in blocked}]
    jobs = (
        [Job.from_row(r) for r in await conn.fetch("retry_jobs", {"ids": retry, "suspend": suspend})] if retry else []
    )
    if awake := sorted({j.queue for j in jobs if j.state == "available"}):
        await conn.notify("insert", awake)
    return jobs, [*held, *blocked]


LIVE_STATES = frozenset({"available", "scheduled", "executing", "retryable", "suspended"})


def _ignored(edge: Row, state: str) -> bool:
    return bool(edge[f"ignore_{state}"]) if state in ("cancelled", "discarded", "deleted") else False


async def reopen_steps(conn: Conn, ids: Sequence[int]) -> tuple[list[int], list[StepBlocked]]:
    """Before a retry moves finished workflow steps (`ids`, by job id; the caller holds their
    job rows) back: decide for each whether it may run, and make it unresolved again so that its
    next ending resolves it and counts its dependents down like any step's.

    A step with a dependency that ended cancelled, discarded or deleted, which it does not
    ignore, is refused (StepBlocked): it would run without that result. A step with a
    dependency not finished yet (or retried by the same call) waits for it: it is returned among
    the steps to suspend, with `pending` set to the dependencies it waits for, and the release
    of dependents frees it. The others may run now. The unresolved dependents of a retried step
    that had counted it as satisfied wait for it again (their `pending` goes up by one), so its
    next completion is not counted twice. Steps without a workflow node are left to the plain
    retry. Returns (steps to suspend, refused steps)."""
    await conn.execute("lock_step_deps", {"ids": list(ids)})
    steps: dict[int, list[Row]] = {}
    for r in await conn.fetch("retry_step_deps", {"ids": list(ids)}):
        steps.setdefault(int(r["job_id"]), []).append(r)
    accepted = set(steps)
    blocked: dict[int, StepBlocked] = {}
    changed = True
    while changed:  # a refused step retried with its dependents refuses them in turn
        changed = False
        for sid in sorted(accepted):
            for e in steps[sid]:
                dep = e["dep_job_id"]
                if dep is None or int(dep) in accepted:
                    continue
                state = e["dep_state"]
                if state in ("cancelled", "discarded", "deleted") and not _ignored(e, state):
                    blocked[sid] = StepBlocked(sid, e["name"], e["dep_name"], state)
                    accepted.discard(sid)
                    changed = True
                    break
    pending: dict[int, int] = {}
    if accepted:
        pending = {
            sid: sum(
                1
                for e in steps[sid]
                if e["dep_job_id"] is not None
                and (int(e["dep_job_id"]) in accepted or e["dep_resolution"] is None or e["dep_state"] in LIVE_STATES)
            )
            for sid in accepted
        }
        # Dependents that counted a reopened step as satisfied wait for it again.
        again: dict[int, int] = {}
        for d in await conn.fetch("unresolved_dependents", {"ids": sorted(accepted)}):
            if int(d["job_id"]) in accepted:
                continue  # its own pending is set below
            old = steps[int(d["dep_job_id"])][0]["resolution"]
            if old is not None and edge_satisfied({**d, "dep_resolution": old}):
                again[int(d["job_id"])] = again.get(int(d["job_id"]), 0) + 1
        if again:
            rows = [{"id": k, "n": -v} for k, v in sorted(again.items())]
            await conn.fetch("decrement_pending", {"rows": dumps(rows)})
        rows = [{"id": sid, "pending": pending[sid]} for sid in sorted(accepted)]
        await conn.execute("reopen_nodes", {"rows": dumps(rows)})
    return sorted(sid for sid in accepted if pending[sid] > 0), [blocked[k] for k in sorted(blocked)]
