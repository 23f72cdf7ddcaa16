"""A node that cannot renew its producer rows gives its jobs up before the Lifeline rescues
them (docs/lease.md), on both engines.

The partition is real, not a mock: another connection holds the write lock the heartbeat needs
(PostgreSQL: `LOCK TABLE baton_producers IN EXCLUSIVE MODE`, which blocks only the producer
rows, so fetches and acks go on; SQLite: `BEGIN IMMEDIATE`, which blocks every write of the
file). The node's heartbeat hangs on it exactly as on a database it cannot reach. The
real-process run behind a frozen TCP proxy is tests/faults/test_partition.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import baton
from baton.engines.sqlite.engine import parse_path
from baton.runtime.lease import Lease, lease_margin
from conftest import wait_for

LOST = ("baton", "node", "lease_lost")
REGAINED = ("baton", "node", "lease_regained")
FENCED = ("baton", "job", "fenced")


def hold_write_lock(url: str, seconds: float, locked: threading.Event) -> None:
    """Hold the lock the producer heartbeat needs for `seconds` (run in a thread)."""
    if url.startswith("postgres"):
        with psycopg.connect(url) as conn:
            conn.execute("LOCK TABLE baton_producers IN EXCLUSIVE MODE")
            locked.set()
            time.sleep(seconds)
            conn.rollback()
        return
    conn = sqlite3.connect(parse_path(url), isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(seconds)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def partition(url: str, seconds: float) -> asyncio.Future[None]:
    """Start holding the lock in a thread; returns once it is held (await the result to end)."""
    locked = threading.Event()
    task = asyncio.ensure_future(asyncio.to_thread(hold_write_lock, url, seconds, locked))
    await wait_for(locked.is_set, timeout=10)
    return task


class SideEffects:
    """What the workers did: `started` and `effects` as (job id, attempt)."""

    def __init__(self) -> None:
        self.started: list[tuple[int, int]] = []
        self.effects: list[tuple[int, int]] = []
        self.saw_cancel: list[tuple[int, int]] = []


def register(app: baton.Baton, side: SideEffects) -> dict[str, Any]:
    """An async and a sync worker that run `args.seconds`, then write their side effect; the
    sync one polls `job.raise_if_cancelled()` while it works."""

    @app.worker(name="lease.async_work")
    async def async_work(job: baton.Job) -> int:
        side.started.append((job.id, job.attempt))
        await asyncio.sleep(float(job.args["seconds"]))
        side.effects.append((job.id, job.attempt))
        return job.id

    @app.worker(name="lease.sync_work")
    def sync_work(job: baton.Job) -> int:
        side.started.append((job.id, job.attempt))
        until = time.monotonic() + float(job.args["seconds"])
        while time.monotonic() < until:
            if job.cancelled():
                side.saw_cancel.append((job.id, job.attempt))
            job.raise_if_cancelled()
            time.sleep(0.02)
        side.effects.append((job.id, job.attempt))
        return job.id

    return {"async": async_work, "sync": sync_work}


# --------------------------------------------------------------------------- the lease itself


def test_the_margin_leaves_a_slow_heartbeat_room_and_the_lifeline_none():
    assert lease_margin(15, 60) == pytest.approx(6.0)
    assert lease_margin(0.5, 2) == pytest.approx(0.2)
    assert lease_margin(1, 2) == pytest.approx(0.2)
    assert lease_margin(0.1, 0.3) == pytest.approx(0.1)  # at least 0.1 s ...
    assert lease_margin(0.25, 0.3) == pytest.approx(0.025)  # ... unless the slack is smaller
    now = [100.0]
    lease = Lease(0.5, 2.0, clock=lambda: now[0])
    assert lease.deadline == pytest.approx(101.8)
    lease.renewed(100.7)
    lease.renewed(100.4)  # a late answer to an older renewal never moves the deadline back
    assert lease.deadline == pytest.approx(102.5)


def test_lease_guard_must_be_a_bool():
    with pytest.raises(baton.ValidationError) as err:
        baton.Baton("sqlite:///unused.db", lease_guard="yes")  # type: ignore[arg-type]
    assert err.value.field == "lease_guard"


def test_a_job_is_not_cancelled_until_its_attempt_is_taken_away():
    job = baton.Job(id=7, state="executing", queue="q", worker="w", args={}, meta={}, tags=[], errors=[],
                    attempt=1, max_attempts=3, priority=0)  # fmt: skip
    assert not job.cancelled()
    job.raise_if_cancelled()
    job._taken_away = "test"
    assert job.cancelled()
    with pytest.raises(baton.JobCancelled, match="job 7 attempt 1"):
        job.raise_if_cancelled()


# --------------------------------------------------------------------------- a cut-off node


async def test_a_cut_off_node_stops_its_jobs_before_their_side_effects_and_runs_them_once_after(
    db_url: str, make_app: Callable[..., baton.Baton], events: Any
) -> None:
    events.attach(LOST, REGAINED, FENCED)
    side = SideEffects()
    app = make_app(queues={"default": 4}, refresh_interval=0.3, stale_after=1.5)
    workers = register(app, side)
    hooks: list[dict[str, Any]] = []
    app.on_lease_lost(hooks.append)
    jobs = await app.insert_all([workers[kind].new({"seconds": 4}) for kind in ("async", "async", "sync", "sync")])
    ids = sorted(j.id for j in jobs)
    async with app:
        await wait_for(lambda: len(side.started) == 4, timeout=15)
        cut = await partition(db_url, 3.0)
        await wait_for(lambda: events.of(LOST), timeout=10)
        await cut
        await wait_for(lambda: len(side.effects) == 4, timeout=30)
        await wait_for(lambda: _all_completed(app, ids), timeout=15)

    # No attempt 1 reached its side effect: every job ran its effect once, on attempt 2.
    assert sorted(side.effects) == [(i, 2) for i in ids]
    sync_ids = sorted(j.id for j in jobs if j.worker == "lease.sync_work")
    async_ids = sorted(j.id for j in jobs if j.worker == "lease.async_work")
    assert sorted({i for i, a in side.saw_cancel if a == 1}) == sync_ids
    (measures, lost), = events.of(LOST)  # fmt: skip
    assert sorted(lost["cancelled"]) == async_ids and sorted(lost["flagged"]) == sync_ids
    assert measures["since_renewal"] < 1.5, "the node gave up before the rows went stale"
    assert [(h["cancelled"], h["flagged"]) for h in hooks] == [(lost["cancelled"], lost["flagged"])]
    (regain_measures, regained), = events.of(REGAINED)  # fmt: skip
    assert sorted(regained["released"]) == ids
    assert regain_measures["cut_off"] >= measures["since_renewal"]
    assert events.of(FENCED) == [], "the given-up attempts sent no ack at all"
    for job_id in ids:
        job = await app.get_job(job_id)
        assert job is not None and job.state == "completed" and job.attempt == 2
        assert [e.get("reason") for e in job.errors] == ["lease_lost"]
        assert job.meta.get("rescued") == 1


async def _all_completed(app: baton.Baton, ids: list[int]) -> bool:
    for job_id in ids:
        job = await app.get_job(job_id)
        if job is None or job.state != "completed":
            return False
    return True


async def test_with_the_lease_guard_off_a_cut_off_node_runs_its_jobs_to_the_end(
    db_url: str, make_app: Callable[..., baton.Baton], events: Any
) -> None:
    """The behaviour before the lease (and what bench/partition.py compares against)."""
    events.attach(LOST, REGAINED)
    side = SideEffects()
    app = make_app(queues={"default": 2}, refresh_interval=0.3, stale_after=1.5, lease_guard=False)
    workers = register(app, side)
    jobs = await app.insert_all([workers["async"].new({"seconds": 3}), workers["sync"].new({"seconds": 3})])
    async with app:
        await wait_for(lambda: len(side.started) == 2, timeout=15)
        await (await partition(db_url, 2.5))
        await wait_for(lambda: _all_completed(app, [j.id for j in jobs]), timeout=20)
    assert sorted(side.effects) == sorted((j.id, 1) for j in jobs)
    assert events.of(LOST) == [] and events.of(REGAINED) == []


# --------------------------------------------------------------------------- live nodes keep their jobs


async def test_a_job_longer_than_stale_after_on_a_live_node_keeps_running(
    db_url: str, make_app: Callable[..., baton.Baton], events: Any
) -> None:
    events.attach(LOST)
    side = SideEffects()
    app = make_app(queues={"default": 2}, refresh_interval=0.2, stale_after=0.8)
    workers = register(app, side)
    jobs = await app.insert_all([workers["async"].new({"seconds": 3}), workers["sync"].new({"seconds": 3})])
    async with app:
        await wait_for(lambda: _all_completed(app, [j.id for j in jobs]), timeout=20)
    assert sorted(side.effects) == sorted((j.id, 1) for j in jobs)
    assert side.saw_cancel == [] and events.of(LOST) == []


async def test_heartbeats_that_are_slow_but_within_stale_after_never_trip(
    db_url: str, make_app: Callable[..., baton.Baton], events: Any
) -> None:
    events.attach(LOST)
    side = SideEffects()
    # margin 0.3 s: a renewal may take up to 2.2 s after the one before it started; it takes ~1 s.
    app = make_app(queues={"default": 1}, refresh_interval=0.5, stale_after=3)
    workers = register(app, side)
    job = await app.insert(workers["async"].new({"seconds": 4}))
    async with app:
        await wait_for(lambda: side.started, timeout=15)
        for _ in range(2):
            await (await partition(db_url, 1.0))
            await asyncio.sleep(0.6)
        await wait_for(lambda: _all_completed(app, [job.id]), timeout=20)
    assert side.effects == [(job.id, 1)] and events.of(LOST) == []


# --------------------------------------------------------------------------- cancelling by hand


async def test_a_cancelled_sync_job_sees_job_cancelled(db_url: str, make_app: Callable[..., baton.Baton]) -> None:
    side = SideEffects()
    app = make_app(queues={"default": 1}, poll_interval=0.1)
    workers = register(app, side)
    job = await app.insert(workers["sync"].new({"seconds": 20}))
    async with app:
        await wait_for(lambda: side.started, timeout=15)
        await app.cancel_job(job.id)
        await wait_for(lambda: side.saw_cancel, timeout=15)
    assert side.effects == []
    done = await app.get_job(job.id)
    assert done is not None and done.state == "cancelled"


async def test_job_cancelled_raised_by_hand_is_an_ordinary_error(make_app: Callable[..., baton.Baton]) -> None:
    app = make_app(queues={"default": 1})

    @app.worker(name="lease.liar", max_attempts=1)
    def liar(job: baton.Job) -> None:
        raise baton.JobCancelled("not really")

    job = await app.insert(liar.new({}))
    assert await app.drain() == {"discarded": 1}
    done = await app.get_job(job.id)
    assert done is not None and "JobCancelled: not really" in done.errors[-1]["error"]


async def test_a_node_whose_loop_blocks_after_an_election_holds_no_lock_on_the_lease_row(
    make_app: Callable[..., baton.Baton], engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every node's election statement locks the lease row, the leader's and the others'
    alike. If that lock lasted until the node's loop sent COMMIT, a loop blocked right after
    the statement (a worker that never awaits) would stall every other node's election, the
    leader's renewal included, until the leader lost its lease and nobody rescued the blocked
    node's jobs (a CI run of the event-loop fault test). Here the loop stays blocked after
    the statement while another session updates the row under a 2 s lock timeout."""
    if engine_name != "postgres":
        pytest.skip("SQLite commits in its database thread, whatever the event loop does")
    app = make_app(queues={"default": 1}, refresh_interval=30)
    from baton.store import jobs as store

    elect = store.elect_leader
    waited: list[float] = []

    async def elect_then_block(conn: Any, node: str, instance: str, ttl: float) -> bool:
        won = await elect(conn, node, instance, ttl)
        # The loop is blocked from here until this returns: nothing of this node runs.
        with psycopg.connect(app.engine.url, autocommit=True) as other:
            other.execute("SET lock_timeout = '2s'")
            started = time.monotonic()
            other.execute("UPDATE baton_leaders SET expires_at = expires_at WHERE name = 'baton'")
            waited.append(time.monotonic() - started)
        return won

    async with app:
        assert app._node is not None
        monkeypatch.setattr(store, "elect_leader", elect_then_block)
        assert await app._node.leadership.tick()
    assert len(waited) == 1 and waited[0] < 1.0, waited
