"""Repair and retention operations used by the plugins: rescue orphaned and exhausted jobs,
heal stuck workflow steps and chain links, prune old rows, and claim cron slots."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..engines.base import Conn, Row
from ..job import Job, dumps, to_datetime
from . import chains, workflows
from .effects import Cascaded, Effects, publish
from .transitions import settle

ORPHAN_CAP = 10_000  # orphans counted beyond a sweep's limit (as the dashboard's health page)


async def set_timeout(conn: Conn, seconds: float | None) -> None:
    """Bound every following statement of this transaction (PostgreSQL statement_timeout)."""
    if seconds is not None:
        await conn.execute("set_statement_timeout", {"ms": str(int(seconds * 1000))})


def brief(job: Job | Row) -> dict[str, Any]:
    """A job as `{id, queue, state}` (the Lifeline's event metadata)."""
    if isinstance(job, Job):
        return {"id": job.id, "queue": job.queue, "state": job.state}
    return {"id": job["id"], "queue": job["queue"], "state": job["state"]}


# --------------------------------------------------------------------------- lifeline


@dataclass(slots=True)
class LifelineResult:
    """What one Lifeline sweep changed."""

    rescued: list[Job] = field(default_factory=list)
    discarded: list[Job] = field(default_factory=list)
    released_steps: list[int] = field(default_factory=list)
    cancelled_steps: list[Job] = field(default_factory=list)
    released_links: list[int] = field(default_factory=list)
    dead_producers: list[Row] = field(default_factory=list)
    repairs: dict[str, int] = field(default_factory=dict)
    effects: Effects = field(default_factory=Effects)
    # Orphans rescued or discarded, as {id, queue, delay}: milliseconds from the dead
    # producer's last heartbeat to the rescue (absent when its row was already gone).
    delays: list[dict[str, Any]] = field(default_factory=list)
    # Orphans this sweep rescued or discarded, and those left for the next sweep (found beyond
    # `limit`; counted up to ORPHAN_CAP).
    orphans: int = 0
    left: int = 0
    # Workflows found stuck, by reason code.
    stuck: dict[str, set[str]] = field(default_factory=dict)

    def stuck_on(self, reason: str, workflow_id: str | None) -> None:
        if workflow_id is not None:
            self.stuck.setdefault(reason, set()).add(workflow_id)


async def rescue_orphans(
    conn: Conn,
    *,
    stale_after: float,
    retry_exhausted: bool,
    limit: int,
    timeout: float | None,
    node: str,
    origin: str,
) -> LifelineResult:
    """Lifeline duties 1 and 2: executing jobs whose producer is missing or stale go back to
    `available` (meta.rescued + 1) or, when exhausted, to `discarded`; available jobs with no
    attempts left are discarded. Dead producers' rows are deleted once their jobs are rescued."""
    out = LifelineResult(effects=Effects(origin=origin))
    await set_timeout(conn, timeout)
    rows = await conn.fetch(
        "rescue_orphans", {"stale": stale_after, "retry_exhausted": retry_exhausted, "limit": limit}
    )
    for row in rows:
        job = Job.from_row(row)
        (out.rescued if job.state == "available" else out.discarded).append(job)
        out.stuck_on("orphaned" if job.state == "available" else "exhausted", job.workflow_id)
        if row.get("since_heartbeat") is not None:
            out.delays.append({"id": job.id, "queue": job.queue, "delay": max(0.0, float(row["since_heartbeat"]))})
    out.orphans = len(rows)
    if len(rows) >= limit:
        backlog = await conn.fetchone("read_orphan_backlog", {"stale": stale_after, "cap": ORPHAN_CAP})
        out.left = int(backlog["n"]) if backlog else 0
    exhausted = [Job.from_row(r) for r in await conn.fetch("discard_exhausted", {"limit": limit})]
    for job in exhausted:
        out.stuck_on("exhausted", job.workflow_id)
    out.discarded.extend(exhausted)
    if out.rescued:
        out.effects.released_queues.update(j.queue for j in out.rescued)
    if out.discarded:
        out.repairs["exhausted"] = len(out.discarded)
        await workflows.announce_steps(conn, out.discarded, "discarded")
        await settle(conn, [(j, "discarded") for j in out.discarded], node, out.effects)
    else:
        await publish(conn, out.effects)
    out.dead_producers = await conn.fetch("delete_dead_producers", {"stale": stale_after})
    return out


async def repair_workflows(conn: Conn, *, limit: int, timeout: float | None, node: str, origin: str) -> LifelineResult:
    """Lifeline duty 3: resolve steps whose job finished or vanished without being resolved
    (their dependents are then released or cancelled as the ack would have), and release
    suspended steps whose dependencies are all satisfied (a missed release)."""
    out = LifelineResult(effects=Effects(origin=origin))
    await set_timeout(conn, timeout)
    effects = out.effects
    missed = await conn.fetch("unresolved_finished_nodes", {"limit": limit})
    if missed:
        before_released, before_cancelled = len(effects.released_ids), len(effects.cascaded)
        frontier = [
            {
                "id": r["job_id"],
                "outcome": r["outcome"],
                "reason": "dep_deleted" if r["outcome"] == "deleted" else "missed_release",
            }
            for r in missed
        ]
        await workflows.resolve_frontier(conn, frontier, node, effects, set())
        for r in missed:
            key = "dep_deleted" if r["outcome"] == "deleted" else "missed_release"
            out.repairs[key] = out.repairs.get(key, 0) + 1
            out.stuck_on(key, r["workflow_id"])
        released = effects.released_ids[before_released:]
        if released:
            why = "dep_deleted" if all(r["outcome"] == "deleted" for r in missed) else "missed_release"
            await conn.execute("mark_repaired", {"ids": released, "repair": why})
        out.released_steps.extend(released)
        out.cancelled_steps.extend(c.job for c in effects.cascaded[before_cancelled:])
    edges = await conn.fetch("stuck_suspended_edges", {"limit": limit})
    if edges:
        by_step: dict[int, list[Row]] = {}
        for e in edges:
            by_step.setdefault(e["job_id"], []).append(e)
        release: list[int] = []
        cancel: list[dict[str, Any]] = []
        for job_id, step_edges in sorted(by_step.items()):
            failing = [e for e in step_edges if e["dep_name"] is not None and not workflows.edge_satisfied(e)]
            out.stuck_on(
                f"dep_{failing[0]['dep_resolution']}" if failing else "missed_release", step_edges[0]["workflow_id"]
            )
            if failing:
                what = failing[0]["dep_resolution"]
                cancel.append(
                    {
                        "id": job_id,
                        "reason": f"dep_{what}",
                        "error": {
                            "error": f"dependency {failing[0]['dep_name']!r} was {what}",
                            "traceback": None,
                            "reason": f"dep_{what}",
                        },
                    }
                )
            else:
                release.append(job_id)
        if release:
            await conn.execute("set_node_reason", {"ids": release, "reason": "missed_release"})
            for r in await conn.fetch("repair_release", {"ids": release, "repair": "missed_release"}):
                out.released_steps.append(r["id"])
                effects.released_ids.append(r["id"])
                if r["state"] == "available":
                    effects.released_queues.add(r["queue"])
            out.repairs["missed_release"] = out.repairs.get("missed_release", 0) + len(release)
        if cancel:
            frontier = []
            cancelled = [Job.from_row(r) for r in await conn.fetch("cancel_steps", {"rows": dumps(cancel)})]
            await workflows.announce_steps(conn, cancelled, "cancelled")
            for job in cancelled:
                reason = next(c["reason"] for c in cancel if c["id"] == job.id)
                out.cancelled_steps.append(job)
                effects.cascaded.append(Cascaded(job, reason[4:]))
                frontier.append({"id": job.id, "outcome": "cancelled", "reason": reason})
                out.repairs[reason] = out.repairs.get(reason, 0) + 1
            await workflows.resolve_frontier(conn, frontier, node, effects, set())
    await publish(conn, effects)
    return out


async def repair_chains(conn: Conn, *, limit: int, timeout: float | None, origin: str) -> LifelineResult:
    """Lifeline duty 4: release the next link of chains whose earlier links are all finished
    (or deleted) but whose next link is still waiting (a missed release)."""
    out = LifelineResult(effects=Effects(origin=origin))
    await set_timeout(conn, timeout)
    keys = [r["chain_key"] for r in await conn.fetch("stuck_chain_keys", {"limit": limit})]
    if keys:
        await conn.execute("lock_keys", {"keys": [f"c:{k}" for k in sorted(keys)]})
        out.released_links = await chains.release_next(conn, sorted(keys), out.effects)
        if out.released_links:
            await conn.execute("mark_repaired", {"ids": out.released_links, "repair": "missed_release"})
            out.repairs["missed_release"] = len(out.released_links)
    await publish(conn, out.effects)
    return out


# --------------------------------------------------------------------------- pruner


async def prune_jobs(
    conn: Conn, *, ages: Mapping[str, float], limit: int, keep_workflow_deps: bool, timeout: float | None
) -> dict[str, int]:
    """Delete at most `limit` terminal jobs older than their state's age; never a step of a
    workflow that has not finished when `keep_workflow_deps`."""
    await set_timeout(conn, timeout)
    rows = await conn.fetch(
        "prune_jobs",
        {"ages": dumps([{"state": s, "age": a} for s, a in ages.items()]), "limit": limit, "keep": keep_workflow_deps},
    )
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return counts


# --------------------------------------------------------------------------- workflow health


async def orphaned_waiting_steps(conn: Conn, limit: int) -> list[Row]:
    """Unfinished steps waiting on a dependency whose job row is gone before it completed."""
    return await conn.fetch("orphaned_waiting_steps", {"limit": limit})


async def resolve_deleted(conn: Conn, *, limit: int, node: str, origin: str) -> tuple[Effects, set[str]]:
    """Resolve steps whose job row is gone as `deleted`: dependents that ignore deleted deps
    are released, and workflows left with nothing to wait for finish. Also returns the
    workflows it resolved steps of (stuck until then: `dep_deleted`)."""
    effects = Effects(origin=origin)
    rows = [r for r in await conn.fetch("unresolved_finished_nodes", {"limit": limit}) if r["outcome"] == "deleted"]
    if rows:
        frontier = [{"id": r["job_id"], "outcome": "deleted", "reason": "dep_deleted"} for r in rows]
        await workflows.resolve_frontier(conn, frontier, node, effects, set())
        await publish(conn, effects)
    return effects, {r["workflow_id"] for r in rows}


async def announce_terminated(conn: Conn, *, limit: int, node: str, origin: str) -> Effects:
    """Completion backstop: announce every terminated workflow that nobody announced (a node
    killed between the last ack and the announcement, rows changed by hand). The atomic claim
    makes this a no-op for workflows announced meanwhile."""
    effects = Effects(origin=origin)
    wids = [r["id"] for r in await conn.fetch("unannounced_terminated", {"limit": limit})]
    if wids:
        await workflows.announce(conn, wids, node, effects)
    return effects


async def take_over_announcements(
    conn: Conn, *, stale: float, limit: int, node: str
) -> tuple[list[dict[str, Any]], dict[str, float | None]]:
    """Completion backstop, second phase: claims whose node never confirmed the finished event
    for `stale` seconds (killed between its commit and the confirmation) are taken over, fenced
    by `emitted_at`; returns their finished-event payloads for this node to emit, and each
    workflow's finished-notification lag (ms, see confirm_announcements)."""
    rows = await conn.fetch("take_over_completions", {"stale": float(stale), "limit": limit, "node": node})
    lags = {r["workflow_id"]: _lag(r["lag"]) for r in rows}
    return (await workflows.summaries(conn, list(lags)) if lags else []), lags


def _lag(value: Any) -> float | None:
    return None if value is None else max(0.0, float(value))


async def claim_failure_reports(conn: Conn, limit: int) -> list[dict[str, Any]]:
    """Claim failed workflows whose failure was not reported yet (once per workflow, across
    sweeps and nodes) and describe each: counts, the root step, its error, cancelled steps."""
    wids = [r["workflow_id"] for r in await conn.fetch("claim_failure_reports", {"limit": limit})]
    if not wids:
        return []
    reports: dict[str, dict[str, Any]] = {}
    for r in await conn.fetch("failure_details", {"ids": wids}):
        rep = reports.setdefault(
            r["workflow_id"],
            {"workflow_id": r["workflow_id"], "workflow_label": r["label"], "steps": []},
        )
        rep["steps"].append(r)
    out = []
    for wid in wids:
        found = reports.get(wid)
        if found is None:
            continue
        rep = found
        steps = rep.pop("steps")
        failed = [s for s in steps if s["state"] in ("cancelled", "discarded")]
        own = [s for s in failed if not (s["reason"] or "").startswith("dep_")] or failed

        def order(s: Row) -> tuple[float, int]:
            at = to_datetime(s["resolved_at"])
            return (at.timestamp() if isinstance(at, datetime) else float("inf"), s["job_id"])

        root = min(own, key=order) if own else None
        error = workflows._loads(root["last_error"]) if root is not None and root["last_error"] is not None else None
        rep.update(
            failed_count=len(failed),
            total_count=len(steps),
            root_step=root["name"] if root is not None else None,
            error=error.get("error") if isinstance(error, dict) else None,
            cancelled_steps=sorted(s["name"] for s in failed if s["state"] == "cancelled"),
            discarded_steps=sorted(s["name"] for s in failed if s["state"] == "discarded"),
        )
        out.append(rep)
    return out


async def prune_workflow_rows(conn: Conn, *, limit: int, debug_log_max_age: float | None) -> dict[str, int]:
    """Retention: delete Baton's workflow rows whose backing job rows are gone (nodes only of
    workflows whose finished event went out, so nothing is announced twice or never), at most
    `limit` per table."""
    counts = {}
    nodes = await conn.fetch("prune_workflow_nodes", {"limit": limit})
    counts["workflow_nodes"] = len(nodes)
    if nodes:
        counts["baton_workflow_deps"] = await conn.execute("prune_workflow_deps", {"ids": [r["job_id"] for r in nodes]})
    counts["workflow_step_stats"] = await conn.execute("prune_step_stats", {"limit": limit})
    counts["workflow_debug_logs"] = await conn.execute(
        "prune_debug_logs", {"limit": limit, "max_age": debug_log_max_age}
    )
    counts["baton_usage"] = await conn.execute("prune_usage", {"limit": limit})
    done = await conn.fetch("prune_completions", {"limit": limit})
    counts["workflow_completions"] = len(done)
    if done:
        counts["baton_workflows"] = await conn.execute("prune_workflows", {"ids": [r["workflow_id"] for r in done]})
    return {table: n for table, n in counts.items() if n}


# --------------------------------------------------------------------------- cron


async def db_now(conn: Conn) -> datetime:
    """The database clock."""
    row = await conn.fetchone("db_now")
    assert row is not None
    value = to_datetime(row["now"])
    assert value is not None
    return value


async def claim_cron_slot(conn: Conn, name: str, slot: datetime) -> bool:
    """Claim `slot` for cron entry `name`; True for exactly one caller per slot."""
    return await conn.fetchone("claim_cron_slot", {"name": name, "slot": slot}) is not None


__all__ = [
    "LifelineResult",
    "announce_terminated",
    "brief",
    "claim_cron_slot",
    "claim_failure_reports",
    "db_now",
    "orphaned_waiting_steps",
    "prune_jobs",
    "prune_workflow_rows",
    "repair_chains",
    "repair_workflows",
    "rescue_orphans",
    "resolve_deleted",
]
