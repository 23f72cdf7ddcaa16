"""Workflow operations: insert and append steps, record step attempts, resolve finished steps
(release dependents, cascade failures), and claim each workflow's one finished announcement."""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..engines.base import Conn, Row
from ..errors import WorkflowError
from ..job import FAILED_STATES, Job, JobSpec, dumps, freeze, jsonb_text, to_datetime
from ..workflows.builder import check_graft_names
from .effects import Cascaded, Effects, publish, step_batches
from .jobs import COPY_AFTER, Ack, insert_job_ids, insert_jobs

if TYPE_CHECKING:
    from ..workflows.builder import PlannedStep

NOTIFY_LIMIT = 7_000
ANALYZE_AFTER = 1_000  # steps  # PostgreSQL caps NOTIFY payloads at 8000 bytes


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


# --------------------------------------------------------------------------- insert / append


async def insert_workflow(
    conn: Conn, label: str | None, plan: Sequence[PlannedStep], origin: str, context: str | None = None
) -> str:
    """Store a validated plan: the workflow row (with its `context`, JSON text), a job per step
    (roots runnable, the rest `suspended`), its workflow_nodes and dependency edges. Returns
    the workflow id. (`insert_workflows` with one workflow.)"""
    return (await insert_workflows(conn, [(label, plan, context)]))[0]


Planned = tuple[str | None, Sequence["PlannedStep"], str | None]  # label, plan, context (JSON text)
NODE_COLUMNS = (
    "workflow_id", "name", "job_id", "deps", "label", "ignore_cancelled", "ignore_discarded", "ignore_deleted",
    "pending", "graft", "parent",
)  # fmt: skip
EDGE_COLUMNS = ("dep_job_id", "job_id", "workflow_id")


async def insert_workflows(conn: Conn, workflows: Sequence[Planned]) -> list[str]:
    """Store many validated plans as `insert_workflow` stores one, with the rows of all of them
    together, not a statement per workflow: per table one statement, or from 200 rows on one
    COPY that the engine streams (rows built while the server ingests the previous chunk).
    Returns the workflow ids, in order."""
    # Random ids, handed out in sorted order: each workflow's rows then sit next to the
    # previous one's in the indexes on workflow_id (fewer pages touched and split).
    wids = sorted(str(uuidlib.uuid4()) for _ in workflows)
    if len(workflows) >= COPY_AFTER:
        rows = ((wid, label, context) for wid, (label, _, context) in zip(wids, workflows, strict=True))
        await conn.copy_rows("baton_workflows", ("id", "label", "context"), rows)
    else:  # the context goes in as the JSON object it is, not as a JSON string
        objects = [
            f'{{"id":"{wid}","label":{"null" if label is None else dumps(label)},"context":{context or "null"}}}'
            for wid, (label, _, context) in zip(wids, workflows, strict=True)
        ]
        await conn.execute("insert_workflows", {"rows": "[" + ",".join(objects) + "]"})
    specs: list[JobSpec] = []
    states: list[str | None] = []
    owners: list[str | None] = []
    n_edges = 0
    for wid, (_, plan, _) in zip(wids, workflows, strict=True):
        for step in plan:
            specs.append(step.job)
            states.append("suspended" if step.edges else None)
            n_edges += len(step.edges)
        owners.extend([wid] * len(plan))
    job_ids = await insert_job_ids(conn, specs, states=states, workflow_ids=owners)
    await _insert_rows(conn, "workflow_nodes", NODE_COLUMNS, len(specs), _node_rows(wids, workflows, job_ids))
    if n_edges:
        await _insert_rows(conn, "baton_workflow_deps", EDGE_COLUMNS, n_edges, _edge_rows(wids, workflows, job_ids))
    # Fresh planner statistics, once for the whole call (see insert_workflow): a big workflow's
    # skew needs the full sample; many small workflows are described as well by a small one.
    if any(len(plan) >= ANALYZE_AFTER for _, plan, _ in workflows):
        await conn.execute("analyze_workflow_tables")
    elif len(specs) >= ANALYZE_AFTER:
        await conn.execute("analyze_workflow_tables_sampled")
    return wids


def _node_rows(wids: Sequence[str], workflows: Sequence[Planned], job_ids: Sequence[int]) -> Iterator[tuple[Any, ...]]:
    n = 0
    for wid, (label, plan, _) in zip(wids, workflows, strict=True):
        for step in plan:
            yield (
                wid, step.name, job_ids[n], step.deps, label, step.ignore_cancelled, step.ignore_discarded,
                step.ignore_deleted, len(step.edges), step.graft, None,
            )  # fmt: skip
            n += 1


def _edge_rows(wids: Sequence[str], workflows: Sequence[Planned], job_ids: Sequence[int]) -> Iterator[tuple[Any, ...]]:
    n = 0
    for wid, (_, plan, _) in zip(wids, workflows, strict=True):
        ids = {step.name: job_ids[n + k] for k, step in enumerate(plan)}
        for step in plan:
            for dep in step.edges:
                yield ids[dep], job_ids[n], wid
            n += 1


_ROW_QUERIES = {"workflow_nodes": "insert_workflow_nodes", "baton_workflow_deps": "insert_workflow_deps"}


async def _insert_rows(
    conn: Conn, table: str, columns: Sequence[str], count: int, rows: Iterable[tuple[Any, ...]]
) -> None:
    """`count` rows into `table`: from COPY_AFTER rows on by COPY, else in one statement."""
    if count >= COPY_AFTER:
        await conn.copy_rows(table, columns, rows)
    else:
        objects = [dict(zip(columns, row, strict=True)) for row in rows]
        await conn.execute(_ROW_QUERIES[table], {"rows": dumps(objects)})


async def _insert_nodes(
    conn: Conn,
    wid: str,
    label: str | None,
    plan: Sequence[PlannedStep],
    ids: dict[str, int],
    existing: dict[str, Row],
    parent: str | None = None,
) -> None:
    nodes, edges = [], []
    for step in plan:
        nodes.append(
            {
                "workflow_id": wid,
                "name": step.name,
                "job_id": ids[step.name],
                "deps": list(step.deps),
                "label": label,
                "ignore_cancelled": step.ignore_cancelled,
                "ignore_discarded": step.ignore_discarded,
                "ignore_deleted": step.ignore_deleted,
                "pending": len(step.edges),
                "graft": step.graft,
                "parent": parent,
            }
        )
        for dep in step.edges:
            dep_id = ids[dep] if dep in ids else existing[dep]["job_id"]
            edges.append({"dep_job_id": dep_id, "job_id": ids[step.name], "workflow_id": wid})
    await conn.execute("insert_workflow_nodes", {"rows": dumps(nodes)})
    if edges:
        await conn.execute("insert_workflow_deps", {"rows": dumps(edges)})


async def append_workflow(
    conn: Conn, wid: str, plan_for: Any, node: str, origin: str = ""
) -> tuple[list[str], Effects]:
    """Add steps to a stored, unfinished workflow. `plan_for(existing_names)` validates and
    flattens the new steps. Steps whose deps already finished are resolved right here."""
    effects = Effects(origin=origin)
    # First, holding nothing yet: no cancel of the workflow runs until these steps commit
    # (transitions.cancel_jobs takes this lock shared), so a cancel cannot miss them.
    await conn.execute("lock_workflow_steps", {"id": wid})
    wf = await conn.fetchone("lock_workflow", {"id": wid})
    if wf is None:
        raise WorkflowError(f"no workflow with id {wid!r}", field="workflow_id")
    if wf["finished"]:
        raise WorkflowError(f"workflow {wid} has already finished; insert a new workflow instead", field="workflow_id")
    existing = {r["name"]: r for r in await conn.fetch("workflow_node_names", {"id": wid})}
    plan: list[PlannedStep] = plan_for(existing.keys())
    check_graft_names(plan, [n for n, r in existing.items() if r["graft"]])
    declared = {s.name: s.edges for s in plan}
    locked: set[str] = set()
    while True:
        # A dependency on a graft step waits for the steps it grafted too (and theirs).
        for step in plan:
            step.edges = _with_grafted(declared[step.name], existing)
        # Lock the existing deps so a concurrent ack cannot resolve one between our read and
        # insert, nor graft one without seeing the new dependents. A graft that committed while
        # we waited for a lock added steps: read the names again and wait for those too.
        outside = sorted({d for s in plan for d in s.edges if d in existing} - locked)
        if not outside:
            break
        rows = await conn.fetch("lock_nodes", {"id": wid, "names": outside})
        locked.update(outside)
        if not any(r["graft"] for r in rows):
            break
        existing = {r["name"]: r for r in await conn.fetch("workflow_node_names", {"id": wid})}
    states = [None if not step.edges else "suspended" for step in plan]
    jobs = await insert_jobs(conn, [s.job for s in plan], states=states, workflow_id=wid)
    ids = {step.name: job.id for step, job in zip(plan, jobs, strict=True)}
    await _insert_nodes(conn, wid, wf["label"], plan, ids, existing)
    # Edges from deps that already resolved: apply them now, exactly as the ack would have.
    new_ids = list(ids.values())
    resolved_edges = await conn.fetch("resolved_edges", {"ids": new_ids})
    if resolved_edges:
        busy: set[str] = set()
        frontier = await _propagate(conn, resolved_edges, effects, busy)
        await resolve_frontier(conn, frontier, node, effects, {wid}, busy)
    await publish(conn, effects)
    return [s.name for s in plan], effects


def _with_grafted(edges: tuple[str, ...], existing: dict[str, Row]) -> tuple[str, ...]:
    """`edges` plus, for each stored graft step among them, every step it (or a graft under
    it) grafted."""
    grafts = [e for e in edges if e in existing and existing[e]["graft"]]
    if not grafts:
        return edges
    out = list(edges)
    for g in grafts:
        prefix = g + "."
        out.extend(n for n, r in existing.items() if r["parent"] is not None and n.startswith(prefix))
    return tuple(dict.fromkeys(out))


async def graft(conn: Conn, acks: Sequence[Ack], effects: Effects) -> None:
    """Insert the steps that applied acks of graft steps carry, in the ack's transaction: each
    graft step grafts once (claim_graft), its grafted steps are named under it, their roots are
    runnable at once, and the graft step's unresolved dependents wait for every one of them."""
    for ack in sorted(acks, key=lambda a: a.job.id):
        assert ack.graft is not None
        claimed = await conn.fetchone("claim_graft", {"id": ack.job.id})
        if claimed is None or not ack.graft:
            continue  # grafted already (a manual retry of the graft step), or nothing to graft
        wid, plan = claimed["workflow_id"], ack.graft
        states = [None if not step.edges else "suspended" for step in plan]
        jobs = await insert_jobs(conn, [s.job for s in plan], states=states, workflow_id=wid)
        ids = {step.name: job.id for step, job in zip(plan, jobs, strict=True)}
        await _insert_nodes(conn, wid, claimed["label"], plan, ids, {}, parent=claimed["name"])
        effects.released_queues.update(j.queue for j in jobs if j.state == "available")
        waiting = await conn.fetch("graft_wait", {"graft": ack.job.id, "n": len(jobs)})
        if waiting:
            await conn.execute(
                "graft_edges",
                {"workflow_id": wid, "ids": [j.id for j in jobs], "dependents": sorted(r["job_id"] for r in waiting)},
            )
        if len(plan) >= ANALYZE_AFTER:  # after the edges too: the planner must see them (insert_workflow)
            await conn.execute("analyze_workflow_tables")


# --------------------------------------------------------------------------- running steps


async def load_context(conn: Conn, steps: Sequence[Job]) -> None:
    """Give fetched steps their name, deps, upstream results and any recorded result of an
    earlier attempt; announce them as executing."""
    own: dict[int, Row] = {}
    deps: dict[int, list[tuple[str, bool, Any, bool]]] = {j.id: [] for j in steps}
    rows = await conn.fetch("workflow_context", {"ids": [j.id for j in steps], "channel": conn.channel("workflow")})
    for r in rows:
        if r["is_dep"]:
            deps[r["job_id"]].append((r["name"], r["recorded"], _loads(r["result"]), r["graft"]))
        else:
            own[r["job_id"]] = {
                **r,
                "result": _loads(r["result"]),
                "deps": _loads(r["deps"]),
                "context": _loads(r["context"]),
            }
    _apply_context(steps, own, deps)
    if conn.dialect != "postgres":  # PostgreSQL sent these from the query above
        await notify_steps(conn, [(j, "executing") for j in steps])


def apply_context_docs(steps: Sequence[Job], docs: dict[int, str | None]) -> None:
    """`load_context` from the JSON documents a PostgreSQL fetch returned with each step
    (`baton_step_context`, which also sent the steps' "executing" events)."""
    own: dict[int, Row] = {}
    deps: dict[int, list[tuple[str, bool, Any, bool]]] = {}
    for job in steps:
        text = docs.get(job.id)
        if text is None:  # the step's node is gone (pruned mid-run): a bare job
            deps[job.id] = []
            continue
        doc = own[job.id] = json.loads(text)
        deps[job.id] = [tuple(d) for d in doc["up"] or ()]  # type: ignore[misc]
    _apply_context(steps, own, deps)


def _apply_context(
    steps: Sequence[Job], own: dict[int, Row], deps: dict[int, list[tuple[str, bool, Any, bool]]]
) -> None:
    contexts: dict[str, Any] = {}  # one frozen copy per workflow and fetch
    for job in steps:
        r = own.get(job.id)
        if r is not None:
            job.step = r["name"]
            job._deps = tuple(r["deps"] or ())
            job._graft = bool(r["graft"])
            job._parent = r["parent"]
            if r["context"] is not None:
                wid = job.workflow_id or ""
                if wid not in contexts:
                    contexts[wid] = freeze(r["context"])
                job._context = contexts[wid]
            if r["recorded"]:
                job._recorded = (r["result"],)
        results: dict[str, Any] = {}
        grafts: set[str] = set()  # deps that are graft steps
        for name, recorded, result, graft in deps.get(job.id, ()):
            if graft:
                grafts.add(name)
            else:
                results[name] = result if recorded else None
        view: dict[str, Any] = {}
        for dep in job._deps:
            if dep in grafts:  # a graft step: the results of the steps grafted under it
                prefix = dep + "."
                view[dep] = {k: v for k, v in results.items() if k.startswith(prefix)}
            elif dep in results:
                view[dep] = results[dep]
            else:  # a sub-workflow dependency: its steps' results by their inner names
                prefix = dep + "."
                view[dep] = {k[len(prefix) :]: v for k, v in results.items() if k.startswith(prefix)}
        job._upstream = view


_EVENT = {"scheduled": "snoozed"}


def _step_event(job: Job, event: str) -> dict[str, Any]:
    """A live step event; a grafted step's names the graft step that grafted it (`parent`)."""
    note = {"type": "step", "workflow_id": job.workflow_id, "step": job.step, "job_id": job.id, "event": event}
    if job._parent is not None:
        note["parent"] = job._parent
    return note


async def notify_steps(conn: Conn, events: Sequence[tuple[Job, str]]) -> None:
    """Send live step events (job, event) from Python, in order and in batches (step_batches)."""
    await conn.notify("workflow", step_batches([dumps(_step_event(job, event)) for job, event in events]))


async def record_attempts(conn: Conn, acks: Sequence[Ack]) -> None:
    """Write results, step stats and live step events for acked workflow steps."""
    # Results travel as JSON text inside the JSON rows, so a bare string result keeps its
    # quotes on every engine and always reads back with json.loads.
    results = [
        {"id": a.job.id, "result": _result_text(conn, a.result_json)}
        for a in acks
        if a.state == "completed" and a.result_json is not None
    ]
    results_json = dumps(results)
    if results:  # a no-op on PostgreSQL, where upsert_step_stats records them too
        await conn.execute("record_results", {"rows": results_json})
    stats = [
        {
            "job_id": a.job.id,
            "workflow_id": a.job.workflow_id,
            "name": a.job.step or "",
            "queued_ms": _queued_ms(a.job),
            "run_ms": a.run_ms,
            "attempts": a.job.attempt,
            "state": a.state,
        }
        for a in acks
    ]
    await conn.execute("upsert_step_stats", {"rows": dumps(stats), "results": results_json})
    await notify_steps(conn, [(a.job, _EVENT.get(a.state, a.state)) for a in acks])


def _result_text(conn: Conn, text: str) -> str:
    """A recorded result as its engine stores it: on PostgreSQL (jsonb) with floats such as
    1e16 spelled so that they read back as floats (`jsonb_text`); as written on SQLite."""
    return jsonb_text(text) if conn.dialect == "postgres" else text


def _queued_ms(job: Job) -> int | None:
    """How long the attempt waited between its scheduled time and its start."""
    if job.attempted_at is None or job.scheduled_at is None:
        return None
    return max(0, int((job.attempted_at - job.scheduled_at).total_seconds() * 1000))


async def complete_steps(
    conn: Conn,
    acks: Sequence[Ack],
    node: str,
    effects: Effects,
    acked: list[Ack],
    take: Sequence[tuple[str, str, int]] = (),
) -> list[Row]:
    """PostgreSQL: write a batch of plain completions (workflow steps or chain links among them)
    in one statement — the fenced ack, step stats and recorded results, "completed" step
    events, resolution, count-down and release of dependents, the completion claims, the next
    link of each chain, and their queues' wake-up (`baton_complete_steps`, migration 007).
    Appends the applied acks to `acked` and records releases and claimed workflows in
    `effects`, as `record_attempts`, `resolve` and `chains.advance` would have. `take` lists
    (queue, producer uuid, free slots) of the acking node: released steps and links of those
    queues move straight to `executing` for that producer, and their rows (as fetch_jobs
    returns them, with `ctx`) are returned."""
    steps = [a.job.workflow_id is not None for a in acks]
    rows = await conn.fetch(
        "complete_steps",
        {
            "ids": [a.job.id for a in acks],
            "attempts": [a.job.attempt for a in acks],
            "uuids": [(a.job.attempted_by or ["", ""])[-1] for a in acks],
            "wids": [a.job.workflow_id for a in acks],
            "names": [a.job.step or "" for a in acks],
            "queued": [_queued_ms(a.job) if s else None for a, s in zip(acks, steps, strict=True)],
            "run": [a.run_ms for a in acks],
            "results": [None if a.result_json is None else jsonb_text(a.result_json) for a in acks],
            "events": [dumps(_step_event(a.job, "completed")) if s else None for a, s in zip(acks, steps, strict=True)],
            "chains": [a.job.chain_key for a in acks],
            "take_queues": [t[0] for t in take],
            "take_uuids": [t[1] for t in take],
            "take_n": [t[2] for t in take],
            "node": node,
            "origin": effects.origin,
            "step_channel": conn.channel("workflow"),
            "insert_channel": conn.channel("insert"),
        },
    )
    by_id = {a.job.id: a for a in acks}
    claimed: list[Row] = []
    for r in rows:
        kind = r["kind"]
        if kind == "acked":  # one row: the applied acks' ids, "12,13,14" (migration 011)
            acked.extend(by_id[int(i)] for i in r["payload"].split(","))
        elif kind == "claimed":
            effects.released_ids.append(r["id"])
            claimed.append(r)
        elif kind == "released":  # one row per queue and state, its jobs' ids as for "acked"
            effects.released_ids.extend(int(i) for i in r["payload"].split(","))
            if r["state"] == "available":
                effects.released_queues.add(r["queue"])
        else:
            effects.finished.append(json.loads(r["payload"]))
    return claimed


async def announce_steps(conn: Conn, jobs: Sequence[Job], event: str) -> None:
    """Live step events for workflow steps that changed state outside an ack (cancels,
    repairs), so subscribers hear about every step that ended."""
    await notify_steps(conn, [(j, event) for j in jobs if j.workflow_id is not None])


async def insert_logs(conn: Conn, acks: Sequence[Ack]) -> None:
    """Store the `job.log(...)` lines of acked attempts."""
    rows = [
        {"workflow_id": a.job.workflow_id, "job_id": a.job.id, "name": a.job.step, "level": level, "message": message}
        for a in acks
        for level, message in a.job._logs
    ]
    if rows:
        await conn.execute("insert_debug_logs", {"rows": dumps(rows)})


async def recorded_result(conn: Conn, job_id: int) -> tuple[Any] | None:
    """A step's recorded result as a 1-tuple, or None when nothing was recorded."""
    row = await conn.fetchone("recorded_result", {"id": job_id})
    if row is None or not row["recorded"]:
        return None
    return (_loads(row["result"]),)


# --------------------------------------------------------------------------- resolution


def edge_satisfied(edge: Row) -> bool:
    res = edge["dep_resolution"]
    return bool(
        res == "completed"
        or (res == "cancelled" and edge["ignore_cancelled"])
        or (res == "discarded" and edge["ignore_discarded"])
        or (res == "deleted" and edge["ignore_deleted"])
    )


async def _propagate(conn: Conn, edges: Sequence[Row], effects: Effects, busy: set[str]) -> list[dict[str, Any]]:
    """Apply resolved dependency edges to their (unresolved) dependents: count satisfied ones
    down and release steps with nothing left pending (adding their workflows to `busy`);
    cancel steps whose dep failed. Returns the cancelled steps as the next resolution frontier."""
    satisfied: dict[int, int] = {}
    failing: dict[int, Row] = {}
    via_deleted: set[int] = set()
    for e in edges:
        if edge_satisfied(e):
            satisfied[e["job_id"]] = satisfied.get(e["job_id"], 0) + 1
            if e["dep_resolution"] == "deleted":
                via_deleted.add(e["job_id"])
        else:
            failing.setdefault(e["job_id"], e)
    for job_id in failing:
        satisfied.pop(job_id, None)
    if satisfied:
        counted = await conn.fetch(
            "decrement_pending", {"rows": dumps([{"id": k, "n": v} for k, v in sorted(satisfied.items())])}
        )
        ready = sorted(r["job_id"] for r in counted if r["pending"] <= 0)
        if ready:
            for r in await conn.fetch("release_jobs", {"ids": ready}):
                effects.released_ids.append(r["id"])
                busy.add(r["workflow_id"])
                if r["state"] == "available":
                    effects.released_queues.add(r["queue"])
            repaired = sorted(via_deleted.intersection(ready))
            if repaired:  # released because a deleted dependency is ignored: say so
                await conn.execute("set_node_reason", {"ids": repaired, "reason": "dep_deleted"})
                await conn.execute("mark_repaired", {"ids": repaired, "repair": "dep_deleted"})
    frontier: list[dict[str, Any]] = []
    if failing:
        rows: list[dict[str, Any]] = []
        for job_id, e in sorted(failing.items()):
            what = e["dep_resolution"]
            rows.append(
                {
                    "id": job_id,
                    "reason": f"dep_{what}",
                    "error": {
                        "error": f"dependency {e['dep_name']!r} was {what}",
                        "traceback": None,
                        "reason": f"dep_{what}",
                    },
                }
            )
        reasons = {r["id"]: r["reason"] for r in rows}
        cancelled = [Job.from_row(r) for r in await conn.fetch("cancel_steps", {"rows": dumps(rows)})]
        for job in cancelled:
            effects.cascaded.append(Cascaded(job, reasons[job.id][4:]))
            if job.attempt > 0:  # it may be running somewhere: tell its node to stop it
                effects.signal_cancel.append(job.id)
            frontier.append({"id": job.id, "outcome": "cancelled", "reason": reasons[job.id]})
        await announce_steps(conn, cancelled, "cancelled")
        # Dependents already terminal but unresolved still resolve as what they are.
    return frontier


async def resolve(
    conn: Conn, outcomes: Sequence[tuple[int, str]], node: str, effects: Effects, reason: str | None = None
) -> None:
    """Steps (by job id) reached terminal `outcomes`: mark them resolved (once), release or
    cancel their dependents recursively, then claim the announcement of finished workflows."""
    frontier = [{"id": i, "outcome": o, "reason": reason} for i, o in outcomes]
    await resolve_frontier(conn, frontier, node, effects, set())


async def resolve_frontier(
    conn: Conn,
    frontier: list[dict[str, Any]],
    node: str,
    effects: Effects,
    touched: set[str],
    busy: set[str] | None = None,
) -> None:
    busy = set() if busy is None else busy  # workflows with a step released in this resolution
    while frontier:
        found = await conn.fetch("resolve_nodes", {"rows": dumps(frontier)})
        rows = [r for r in found if r["kind"] == "node"]
        if not rows:
            break
        touched.update(r["workflow_id"] for r in rows)
        # PostgreSQL returned the dependents with the resolved steps (dependents is a no-op there).
        edges = [r for r in found if r["kind"] == "edge"]
        edges += await conn.fetch("dependents", {"ids": [r["job_id"] for r in rows]})
        frontier = await _propagate(conn, edges, effects, busy) if edges else []
    # A workflow in which this transaction released a step cannot have terminated (that step
    # has not run yet): only the others need the lock and the termination check.
    candidates = touched - busy
    if candidates:
        await finish(conn, sorted(candidates), node, effects)


async def finish(conn: Conn, wids: Sequence[str], node: str, effects: Effects) -> None:
    """Announce every workflow in `wids` whose steps have all resolved. The workflow rows are
    locked first so that of two transactions resolving the last steps concurrently, the second
    sees the first's commit: exactly one of them finds the workflow finished."""
    if conn.dialect == "postgres":  # the same steps in one statement (migration 007)
        params = {"ids": list(wids), "node": node, "origin": effects.origin, "channel": conn.channel("workflow")}
        effects.finished.extend(json.loads(r["payload"]) for r in await conn.fetch("finish_workflows", params))
        return
    await conn.execute("lock_workflows", {"ids": list(wids)})
    done = [r["id"] for r in await conn.fetch("terminated_workflows", {"ids": list(wids)})]
    if done:
        await announce(conn, done, node, effects)


async def announce(conn: Conn, wids: Sequence[str], node: str, effects: Effects) -> list[dict[str, Any]]:
    """Claim and announce terminated workflows. Only the transaction whose insert into
    `workflow_completions` succeeds announces; for everyone else this is a no-op."""
    payloads = await summaries(conn, wids)
    if not payloads:
        return []
    claimed = await conn.fetch(
        "claim_completions",
        {"rows": dumps([{"id": p["workflow_id"], "status": p["status"]} for p in payloads]), "node": node},
    )
    won = {r["workflow_id"] for r in claimed}
    out = [p for p in payloads if p["workflow_id"] in won]
    notes = []
    for p in out:
        note = dumps({"type": "finished", "origin": effects.origin, **p})
        if len(note.encode()) > NOTIFY_LIMIT:
            note = dumps(
                {"type": "finished", "origin": effects.origin, "workflow_id": p["workflow_id"], "truncated": True}
            )
        notes.append(note)
    await conn.notify("workflow", notes)
    effects.finished.extend(out)
    return out


async def confirm_announcements(conn: Conn, wids: Sequence[str], node: str) -> dict[str, float | None]:
    """Second phase of the announcement, after the claim committed: the workflows whose
    finished event this node now emits (a claim the backstop took over is not among them),
    each with its finished-notification lag: milliseconds from the end of its last step to
    this confirmation, on the database's clock (None when none of its steps is left)."""
    rows = await conn.fetch("confirm_completions", {"ids": list(wids), "node": node})
    return {r["workflow_id"]: None if r["lag"] is None else max(0.0, float(r["lag"])) for r in rows}


async def summaries(conn: Conn, wids: Sequence[str]) -> list[dict[str, Any]]:
    """The finished-event payload of each workflow: label, status, failed_steps, counts."""
    rows = await conn.fetch("workflow_summary", {"ids": list(wids)})
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        p = out.setdefault(
            r["workflow_id"],
            {
                "workflow_id": r["workflow_id"],
                "label": r["label"],
                "status": "completed",
                "failed_steps": [],
                "counts": {},
            },
        )
        state = r["state"]
        p["counts"][state] = p["counts"].get(state, 0) + r["n"]
        if state in FAILED_STATES:
            p["failed_steps"].extend(_loads(r["names"]) or ())
            p["status"] = "failed"
    for p in out.values():
        p["failed_steps"].sort()
    return [out[w] for w in wids if w in out]


async def status_rows(conn: Conn, wid: str) -> tuple[Row | None, list[Row]]:
    """The workflow row (with completion) and one row per step with its job's state."""
    wf = await conn.fetchone("workflow_row", {"id": wid})
    if wf is None:
        return None, []
    return wf, await conn.fetch("workflow_steps", {"id": wid})


async def list_workflows(conn: Conn, limit: int = 50, label: str | None = None) -> list[Row]:
    """Recent workflows with step counts by state; timestamps as aware datetimes on every
    engine (SQLite keeps them as seconds since the epoch), as `workflow_status` gives them."""
    rows = await conn.fetch("list_workflows", {"limit": limit, "label": label})
    return [
        {
            **r,
            "inserted_at": to_datetime(r["inserted_at"]),
            "announced_at": to_datetime(r["announced_at"]),
            "steps": int(r["steps"] or 0),
            "resolved": int(r["resolved"] or 0),
        }
        for r in rows
    ]
