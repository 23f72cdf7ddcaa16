"""Job operations on the jobs table alone: insert (unique and chained jobs included), the
vocabulary of an attempt's outcome (`Ack`), queries, retry, stage, producers and the leader.
State changes that also settle workflows and chains live in `transitions`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ..engines.base import Conn, Row
from ..job import Job, JobSpec, UsageRecord, dumps, to_datetime

if TYPE_CHECKING:
    from ..workflows.builder import PlannedStep

INSERT_BATCH = 5_000


def _str(value: str | None) -> str:
    return "null" if value is None else json.dumps(value, ensure_ascii=False)


def _row_json(i: int, spec: JobSpec, state: str | None, workflow_id: str | None) -> str:
    at = spec.scheduled_at.timestamp() if spec.scheduled_at is not None else None
    return (
        f'{{"i":{i},"state":{_str(state)},"queue":{_str(spec.queue)},"worker":{_str(spec.worker)},'
        f'"args":{spec.args_json},"meta":{spec.meta_json},"tags":{dumps(spec.tags)},'
        f'"priority":{spec.priority},"max_attempts":{spec.max_attempts},'
        f'"at":{"null" if at is None else repr(at)},"delay":{spec.schedule_in or 0},'
        f'"unique_key":{_str(spec.unique_key())},"chain_key":{_str(spec.chain_key)},'
        f'"workflow_id":{_str(workflow_id)}}}'
    )


def _runs_now(spec: JobSpec) -> bool:
    """Whether the job is due at once (no time or delay given): `insert_job` can insert it."""
    return spec.scheduled_at is None and not spec.schedule_in


def _job_params(spec: JobSpec, state: str | None, workflow_id: str | None, channel: str | None) -> dict[str, Any]:
    """`insert_job`'s parameters for one job due at once (see _runs_now)."""
    return {
        "state": state or "available",
        "queue": spec.queue,
        "worker": spec.worker,
        "args": spec.args_json,
        "meta": spec.meta_json,
        "tags": spec.tags,
        "priority": spec.priority,
        "max_attempts": spec.max_attempts,
        "unique_key": spec.unique_key(),
        "chain_key": spec.chain_key,
        "workflow_id": workflow_id,
        "channel": channel,
    }


def _new_job(
    spec: JobSpec, job_id: int, state: str, inserted_at: Any, scheduled_at: Any, workflow_id: str | None
) -> Job:
    # Positional: a slots dataclass builds twice as fast so, and bulk inserts build one per row.
    # Order: id, state, queue, worker, args, meta, tags, errors, attempt, max_attempts, priority,
    # inserted_at, scheduled_at, then attempted/completed/cancelled/discarded_at and attempted_by.
    return Job(
        job_id, state, spec.queue, spec.worker, spec.args, spec.meta, spec.tags, [], 0,
        spec.max_attempts, spec.priority, to_datetime(inserted_at), to_datetime(scheduled_at),
        None, None, None, None, None, workflow_id, spec.chain_key,
    )  # fmt: skip


COPY_AFTER = 200  # rows per batch from which COPY beats one INSERT ... SELECT statement
COPY_COLUMNS = (
    "id", "state", "queue", "worker", "args", "meta", "tags", "priority", "max_attempts",
    "scheduled_at", "inserted_at", "unique_key", "chain_key", "workflow_id",
)  # fmt: skip


async def _copy_batch(
    conn: Conn,
    specs: Sequence[JobSpec],
    forced: Sequence[str | None],
    workflow_ids: Sequence[str | None],
    notify: bool,
    jobs: list[Job] | None,
) -> tuple[Sequence[int], set[str]]:
    """Insert a large batch with COPY in two round trips: reserve ids (reading the database
    clock, and on PostgreSQL waking the batch's queues, delivered on commit), then stream the
    rows, each job's state decided against that clock. Returns the ids and the queues of the
    jobs stored `available`; appends a Job per row to `jobs` (unless None: ids are enough)."""
    await conn.execute("ensure_job_sequence")
    queues = sorted({s.queue for s, state in zip(specs, forced, strict=True) if state is None}) if notify else []
    channel = conn.channel("insert") if queues and conn.dialect == "postgres" else None
    reserved = await conn.fetch("reserve_job_ids", {"n": len(specs), "channel": channel, "queues": queues})
    now = to_datetime(reserved[0]["now"])
    assert now is not None
    if "last" in reserved[0]:  # SQLite's single writer reserved a contiguous block
        last = int(reserved[0]["last"])
        ids: Sequence[int] = range(last - len(specs) + 1, last + 1)
    elif reserved[0]["ids"] is None:  # PostgreSQL's sequence values for the jobs: one run
        first = int(reserved[0]["first"])
        ids = range(first, first + len(specs))
    else:  # ... or, interleaved with other sessions', an array literal "{1,2,3}"
        ids = list(map(int, reserved[0]["ids"][1:-1].split(",")))
    available: set[str] = set()
    columns, keep = _copy_columns(conn, specs)

    def rows() -> Iterator[tuple[Any, ...]]:
        # Taken by the engine chunk by chunk while the server ingests the previous chunk, so
        # building the rows (and the jobs returned) overlaps with the server's work.
        for job_id, spec, state, workflow_id in zip(ids, specs, forced, workflow_ids, strict=True):
            if spec.scheduled_at is not None:
                scheduled_at = spec.scheduled_at
            elif spec.schedule_in:
                scheduled_at = now + timedelta(seconds=spec.schedule_in)
            else:
                scheduled_at = now
            if state is None:
                state = "available" if scheduled_at is now or scheduled_at <= now else "scheduled"
            if state == "available":
                available.add(spec.queue)
            if jobs is not None:
                jobs.append(_new_job(spec, job_id, state, now, scheduled_at, workflow_id))
            unique_key = None if spec.unique is None else spec.unique_key()
            yield (
                job_id, state, spec.queue, spec.worker, spec.args_json, spec.meta_json, spec.tags, spec.priority,
                spec.max_attempts, scheduled_at, now, unique_key, spec.chain_key, workflow_id,
            )  # fmt: skip

    await conn.copy_rows("baton_jobs", columns, rows() if keep is None else map(keep, rows()))
    return ids, available


def _copy_columns(
    conn: Conn, specs: Sequence[JobSpec]
) -> tuple[tuple[str, ...], Callable[[tuple[Any, ...]], tuple[Any, ...]] | None]:
    """The COPY columns of a batch and the projection of its full rows onto them (None: all).
    On PostgreSQL a column that every job of the batch leaves at the column's default is
    left out and filled by the server: parsing values (timestamps above all) is a good part of
    its cost. The timestamps are `now()`, the clock `reserve_job_ids` read, only within the
    same transaction."""
    if conn.dialect != "postgres":
        return COPY_COLUMNS, None
    # The column defaults: NULL keys, '{}' for meta and tags, priority 0, max_attempts 20.
    # (A list per attribute: counting in it is a C loop, faster than any per-job test.)
    n = len(specs)
    omit = set()
    if [s.unique for s in specs].count(None) == n:
        omit.add("unique_key")
    if [s.chain_key for s in specs].count(None) == n:
        omit.add("chain_key")
    if [s.meta_json for s in specs].count("{}") == n:
        omit.add("meta")
    if not any([s.tags for s in specs]):
        omit.add("tags")
    if [s.priority for s in specs].count(0) == n:
        omit.add("priority")
    if [s.max_attempts for s in specs].count(20) == n:
        omit.add("max_attempts")
    if conn.in_transaction:
        omit.add("inserted_at")
        if [s.scheduled_at for s in specs].count(None) == n and not any([s.schedule_in for s in specs]):
            omit.add("scheduled_at")
    if not omit:
        return COPY_COLUMNS, None
    columns = tuple(c for c in COPY_COLUMNS if c not in omit)
    return columns, itemgetter(*(COPY_COLUMNS.index(c) for c in columns))


def single_statement(specs: Sequence[JobSpec]) -> bool:
    """Whether `insert_jobs` needs just one statement for these jobs (no key locks, no COPY),
    so it can run without BEGIN and COMMIT round trips."""
    return len(specs) < COPY_AFTER and all(s.unique is None and s.chain_key is None for s in specs)


async def insert_jobs(
    conn: Conn,
    specs: Sequence[JobSpec],
    *,
    states: Sequence[str | None] | None = None,
    workflow_id: str | None = None,
    workflow_ids: Sequence[str | None] | None = None,
    notify: bool = True,
) -> list[Job]:
    """Insert `specs` (one statement per batch); return a Job per spec, in order.

    Unique specs that conflict with an existing job (or an earlier spec of the same call)
    come back as that job with `conflict=True`. Chained specs start `suspended` behind an
    unfinished link of their chain. `states` forces a state per spec (workflows);
    `workflow_id` puts every job in one workflow, `workflow_ids` gives each spec its own.
    """
    if not specs:
        return []
    forced: list[str | None] = list(states) if states is not None else [None] * len(specs)
    owners: Sequence[str | None] = workflow_ids if workflow_ids is not None else [workflow_id] * len(specs)
    if len(owners) != len(specs):
        raise ValueError(f"workflow_ids has {len(owners)} entries for {len(specs)} jobs")
    results: list[Job | None] = [None] * len(specs)

    unique_keys = sorted({k for s in specs if (k := s.unique_key()) is not None})
    chain_keys = sorted({s.chain_key for s in specs if s.chain_key is not None})
    if unique_keys or chain_keys:
        # Serialise concurrent inserts of the same key (PostgreSQL: advisory locks held to
        # commit; SQLite: the single writer already serialises).
        await conn.execute("lock_keys", {"keys": [f"u:{k}" for k in unique_keys] + [f"c:{k}" for k in chain_keys]})

    pending: list[int] = list(range(len(specs)))
    if unique_keys:
        checks = {}
        for s in specs:
            if s.unique is not None:
                checks[s.unique_key()] = {
                    "key": s.unique_key(),
                    "states": list(s.unique.states),
                    "period": s.unique.period,
                }
        existing: dict[str, Row] = {}
        for r in await conn.fetch("unique_conflicts", {"checks": dumps(list(checks.values()))}):
            existing.setdefault(r["unique_key"], r)
        first_of_key: dict[str, int] = {}
        pending = []
        for i, s in enumerate(specs):
            key = s.unique_key()
            if key is not None and key in existing:
                job = Job.from_row(existing[key])
                job.conflict = True
                results[i] = job
            elif key is not None and key in first_of_key:
                continue  # filled from the first spec of this key after the insert
            else:
                if key is not None:
                    first_of_key[key] = i
                pending.append(i)

    if chain_keys:
        blocked = {r["chain_key"] for r in await conn.fetch("chain_blocked", {"keys": chain_keys})}
        for i in pending:
            key = specs[i].chain_key
            if key is None or forced[i] is not None:
                continue
            if key in blocked:
                forced[i] = "suspended"
            else:
                blocked.add(key)  # later links of this call wait behind this one

    queues: set[str] = set()  # to wake with a separate notification
    if len(pending) >= COPY_AFTER:
        jobs: list[Job] = []
        _, available = await _copy_batch(
            conn, [specs[i] for i in pending], [forced[i] for i in pending], [owners[i] for i in pending], notify, jobs
        )
        for i, job in zip(pending, jobs, strict=True):
            results[i] = job
        if conn.dialect != "postgres":
            queues.update(available)
        pending = []
    for start in range(0, len(pending), INSERT_BATCH):
        chunk = pending[start : start + INSERT_BATCH]
        # On PostgreSQL the insert statement wakes the producers itself (NOTIFY on commit).
        inline = notify and conn.dialect == "postgres"
        channel = conn.channel("insert") if inline else None
        if len(chunk) == 1 and conn.dialect == "postgres" and _runs_now(specs[chunk[0]]):
            i = chunk[0]
            rows = await conn.fetch("insert_job", _job_params(specs[i], forced[i], owners[i], channel))
        else:
            rows_json = "[" + ",".join(_row_json(n, specs[i], forced[i], owners[i]) for n, i in enumerate(chunk)) + "]"
            rows = await conn.fetch("insert_jobs", {"rows": rows_json, "channel": channel})
        rows.sort(key=lambda r: r["id"])
        for i, row in zip(chunk, rows, strict=True):
            results[i] = _new_job(specs[i], row["id"], row["state"], row["inserted_at"], row["scheduled_at"], owners[i])
            if row["state"] == "available" and not inline:
                queues.add(row["queue"])

    if unique_keys:
        by_key: dict[str | None, Job | None] = {}
        for i, spec in enumerate(specs):
            if spec.unique is not None and results[i] is not None and not results[i].conflict:  # type: ignore[union-attr]
                by_key.setdefault(spec.unique_key(), results[i])
        for i, result in enumerate(results):
            if result is None:
                twin = by_key[specs[i].unique_key()]
                assert twin is not None
                copy = Job.from_row({**_job_row(twin)})
                copy.conflict = True
                results[i] = copy
    if notify and queues:
        await conn.notify("insert", sorted(queues))
    return [r for r in results if r is not None]


async def insert_job_ids(
    conn: Conn, specs: Sequence[JobSpec], *, states: Sequence[str | None], workflow_ids: Sequence[str | None]
) -> Sequence[int]:
    """`insert_jobs` for a caller that needs only the ids, in order (a bulk workflow insert):
    a COPY batch without unique or chained jobs builds no Job per row."""
    n = len(specs)
    if n < COPY_AFTER or [s.unique for s in specs].count(None) != n or [s.chain_key for s in specs].count(None) != n:
        return [job.id for job in await insert_jobs(conn, specs, states=states, workflow_ids=workflow_ids)]
    if len(states) != n or len(workflow_ids) != n:
        raise ValueError(f"{len(states)} states and {len(workflow_ids)} workflow_ids for {n} jobs")
    ids, available = await _copy_batch(conn, specs, states, workflow_ids, True, None)
    if available and conn.dialect != "postgres":  # PostgreSQL woke them when reserving the ids
        await conn.notify("insert", sorted(available))
    return ids


def _job_row(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "state": job.state,
        "queue": job.queue,
        "worker": job.worker,
        "args": job.args,
        "meta": job.meta,
        "tags": job.tags,
        "errors": job.errors,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "inserted_at": job.inserted_at,
        "scheduled_at": job.scheduled_at,
        "workflow_id": job.workflow_id,
        "chain_key": job.chain_key,
    }


# --------------------------------------------------------------------------- attempt outcomes


@dataclass(slots=True)
class Ack:
    """The outcome of one attempt, to be written by `ack_jobs`."""

    job: Job
    state: str  # completed | retryable | discarded | cancelled | scheduled (snoozed)
    delay: float = 0.0
    error: str | None = None
    traceback: str | None = None
    extra_attempts: int = 0
    meta: dict[str, Any] | None = None  # keys to set in the job's meta
    result_json: str | None = None  # set when the result is recorded
    run_ms: int = 0
    reason: str | None = None
    graft: list[PlannedStep] | None = None  # a graft step's planned steps, inserted with this ack
    usage: list[UsageRecord] | None = None  # `job.record_usage` calls of this attempt

    def row(self) -> dict[str, Any]:
        err = None
        if self.error is not None:
            err = {"error": self.error, "traceback": self.traceback}
            if self.reason:
                err["reason"] = self.reason
        return {
            "id": self.job.id,
            "attempt": self.job.attempt,
            "uuid": (self.job.attempted_by or ["", ""])[-1],
            "state": self.state,
            "delay": self.delay,
            "error": err,
            "extra": self.extra_attempts,
            # The whole new meta (the job cannot change while this attempt owns it), so keys
            # set to null survive on every engine.
            "meta": None if self.meta is None else {**self.job.meta, **self.meta},
        }


@dataclass(slots=True)
class Dropped:
    """An ack that was not applied (fenced): the job is no longer this attempt's to finish."""

    job: Job
    state: str | None  # current state, None if the row is gone
    reason: str  # cancelled | rescued | missing | finished


# --------------------------------------------------------------------------- queries & admin


async def get_job(conn: Conn, job_id: int) -> Job | None:
    """The job with `job_id`, or None."""
    row = await conn.fetchone("get_job", {"id": job_id})
    return Job.from_row(row) if row else None


async def list_jobs(
    conn: Conn,
    *,
    ids: Sequence[int] | None = None,
    queue: str | None = None,
    worker: str | None = None,
    states: Sequence[str] | None = None,
    workflow_id: str | None = None,
    limit: int = 100,
) -> list[Job]:
    """Jobs matching every given filter, newest first."""
    rows = await conn.fetch(
        "list_jobs",
        {
            "ids": list(ids) if ids is not None else None,
            "queue": queue,
            "worker": worker,
            "states": list(states) if states is not None else None,
            "workflow_id": workflow_id,
            "limit": limit,
        },
    )
    return [Job.from_row(r) for r in rows]


async def count_jobs(conn: Conn, queue: str | None = None) -> dict[str, int]:
    """Number of jobs by state (optionally for one queue)."""
    rows = await conn.fetch("count_jobs", {"queue": queue})
    return {r["state"]: int(r["n"]) for r in rows}


@dataclass(frozen=True, slots=True)
class UniqueHeld:
    """A finished unique job that a retry left as it was: `holder` (in `holder_state`), another
    job with its unique key, is waiting or running, and a retry would run it a second time.
    `holder_state` is "retried" when the holder is a job retried by the same call."""

    id: int
    holder: int
    holder_state: str


@dataclass(frozen=True, slots=True)
class StepBlocked:
    """A finished workflow step a retry left as it was: its dependency `dep` ended `dep_state`
    (cancelled, discarded or deleted) and the step does not ignore that, so it would run
    without the dependency's result."""

    id: int
    step: str
    dep: str
    dep_state: str

    def message(self) -> str:
        head = f"step {self.step!r} (job {self.id}) was not retried: its dependency {self.dep!r} is {self.dep_state}"
        if self.dep_state == "deleted":
            return (
                f"{head} (its job row is gone) and the step was not added with ignore_deleted=True, so it can "
                "never run; insert a new workflow instead"
            )
        return (
            f"{head}, so it would run without that dependency's result; retry step {self.dep!r} first, then "
            f"this step (it waits, suspended, until {self.dep!r} completes)"
        )


async def stage_jobs(conn: Conn, limit: int) -> dict[str, int]:
    """Make due `scheduled`/`retryable` jobs `available`; return how many per queue."""
    rows = await conn.fetch("stage_jobs", {"limit": limit})
    per_queue: dict[str, int] = {}
    for r in rows:
        per_queue[r["queue"]] = per_queue.get(r["queue"], 0) + 1
    if per_queue:
        await conn.notify("insert", sorted(per_queue))
    return per_queue


async def release_on_shutdown(conn: Conn, ids: Iterable[int], uuid: str, node: str) -> list[Job]:
    """Hand the jobs a stopping producer could not finish back to `available` right away
    (rescued, with one more attempt allowed, since the node stopping is not the job's fault)."""
    return await release_jobs_of_producer(conn, ids, uuid, f"node {node} shut down before the job finished", "shutdown")


async def executing_ids(conn: Conn, uuid: str) -> list[int]:
    """Ids of the jobs the database records as executing for producer `uuid`."""
    return [r["id"] for r in await conn.fetch("executing_ids", {"uuid": uuid})]


async def release_jobs_of_producer(conn: Conn, ids: Iterable[int], uuid: str, message: str, reason: str) -> list[Job]:
    """Move jobs still executing for producer `uuid` back to `available` (meta.rescued + 1,
    one more attempt allowed), recording why."""
    error = {"error": message, "traceback": None, "reason": reason}
    rows = await conn.fetch("release_on_shutdown", {"ids": list(ids), "uuid": uuid, "error": dumps(error)})
    jobs = [Job.from_row(r) for r in rows]
    if jobs:
        await conn.notify("insert", sorted({j.queue for j in jobs}))
    return jobs


# --------------------------------------------------------------------------- producers & leader


async def upsert_producers(conn: Conn, producers: Sequence[dict[str, Any]]) -> None:
    """Create or refresh producer rows (`uuid`, `node`, `queue`, `meta`); touches `updated_at`."""
    if producers:
        await conn.execute("upsert_producers", {"rows": dumps(list(producers))})


async def delete_producers(conn: Conn, uuids: Sequence[str]) -> None:
    """Remove producer rows (graceful stop)."""
    if uuids:
        await conn.execute("delete_producers", {"uuids": list(uuids)})


async def reregister_producers(
    conn: Conn, producers: Sequence[dict[str, Any]], old_uuids: Sequence[str], node: str
) -> list[Job]:
    """A node that lost its lease comes back (run in one transaction): insert its producers'
    rows under new uuids, hand back every job still executing under the old ones (the node
    gave those attempts up; fenced on the old uuid, so a job already rescued is untouched) and
    delete the old rows. Returns the jobs handed back."""
    await upsert_producers(conn, producers)
    released: list[Job] = []
    for uuid in old_uuids:
        ids = await executing_ids(conn, uuid)
        if ids:
            released += await release_jobs_of_producer(
                conn, ids, uuid, f"node {node} lost its lease while the job was executing; rescued", "lease_lost"
            )
    await delete_producers(conn, old_uuids)
    return released


async def elect_leader(conn: Conn, node: str, instance: str, ttl: float) -> bool:
    """Become or stay leader unless another live instance holds an unexpired lease."""
    row = await conn.fetchone("elect_leader", {"node": node, "instance": instance, "ttl": ttl})
    return row is not None and row["instance"] == instance


async def resign_leader(conn: Conn, instance: str) -> None:
    """Give up leadership so another node is elected at once."""
    await conn.execute("resign_leader", {"instance": instance})
    await conn.notify("leader", [dumps({"action": "resigned", "instance": instance})])


async def current_leader(conn: Conn) -> Row | None:
    """The current leader row, if its lease has not expired."""
    return await conn.fetchone("current_leader")


async def list_producers(conn: Conn) -> list[Row]:
    """Every producer row with its age in seconds."""
    return await conn.fetch("list_producers")
