"""The Lifeline proves Baton's promise that no job is lost: real worker nodes are killed
(`kill -9`) or frozen (SIGSTOP) mid-job, and their jobs come back exactly once; exhausted
jobs are discarded (or retried on request); jobs of live nodes are never touched however long
they run; missed workflow and chain releases are healed; late acks of a rescued attempt are
fenced. Both engines, real subprocesses (tests/heal_nodes.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

import baton
import heal_nodes
from baton.plugins import Lifeline
from baton.read import health
from conftest import wait_for
from heal_nodes import ago_sql, now_sql, side_sql

STOP = ("baton", "plugin", "stop")


def sweeper(make_app: Callable[..., baton.Baton], stale_after: float = 2) -> baton.Baton:
    """An app (not started) whose only use is running plugin sweeps with `stale_after`."""
    return make_app(stale_after=stale_after, refresh_interval=min(0.5, stale_after / 2))


def execs(url: str, job_id: int, phase: str = "start") -> list[tuple[int, int]]:
    """(pid, attempt) of each execution of `job_id` recorded by heal.sleeper, in order."""
    rows = side_sql(
        url, "SELECT pid, attempt FROM exec_log WHERE job_id = ? AND phase = ? ORDER BY attempt", (job_id, phase)
    )
    return [(int(p), int(a)) for p, a in rows]


def started_count(url: str) -> int:
    return int(side_sql(url, "SELECT count(*) FROM exec_log WHERE phase = 'start'")[0][0])


def producer_nodes(url: str) -> list[str]:
    return sorted(r[0] for r in side_sql(url, "SELECT node FROM baton_producers"))


async def states(app: baton.Baton, ids: list[int]) -> dict[int, str]:
    jobs = [await app.get_job(i) for i in ids]
    return {j.id: j.state for j in jobs if j is not None}


async def kill_mid_job(
    spawn: Any, url: str, inserter: baton.Baton, specs: list[baton.JobSpec]
) -> tuple[list[int], int]:
    """Insert `specs`, start a victim node, wait until it executes every job, kill -9 it.
    Returns the job ids and the victim's pid."""
    jobs = await inserter.insert_all(specs)
    victim = spawn("worker", url, node="victim")
    await victim.ready()
    await wait_for(lambda: started_count(url) == len(jobs), timeout=20)
    victim.signal(signal.SIGKILL)
    await asyncio.to_thread(victim.proc.wait)
    return [j.id for j in jobs], victim.pid


# --------------------------------------------------------------------------- orphans of a killed node


async def test_kill9_orphans_are_rescued_once_and_complete_exactly_once_more(db_url, side, spawn, make_app, events):
    events.attach(STOP)
    inserter = make_app()
    w = heal_nodes.register(inserter)
    ids, victim_pid = await kill_mid_job(
        spawn,
        db_url,
        inserter,
        [w["heal.sleeper"].new({"n": i, "sleep": 30}) for i in range(4)]
        + [w["heal.sleeper"].new({"n": 99, "sleep": 30}, max_attempts=1)],
    )
    rescuable, exhausted = ids[:4], ids[4]
    assert set((await states(inserter, ids)).values()) == {"executing"}
    assert producer_nodes(db_url) == ["victim"]

    app = sweeper(make_app)
    lifeline = Lifeline()
    # The victim heartbeated less than 0.5 s ago: it still looks alive, nothing is touched.
    early = await lifeline.sweep(app)
    assert early["rescued_jobs"] == [] and early["discarded_jobs"] == []
    assert set((await states(inserter, ids)).values()) == {"executing"}

    await asyncio.sleep(2.5)  # the producer row is now older than stale_after=2
    meta = await lifeline.sweep(app)
    assert sorted(meta["rescued_jobs"], key=lambda j: j["id"]) == [
        {"id": i, "queue": "default", "state": "available"} for i in rescuable
    ]
    assert meta["discarded_jobs"] == [{"id": exhausted, "queue": "default", "state": "discarded"}]
    stop = [md for _, md in events.of(STOP) if md["plugin"] == "lifeline"]
    assert stop[-1]["rescued_jobs"] == meta["rescued_jobs"]
    assert stop[-1]["discarded_jobs"] == meta["discarded_jobs"]

    for job_id in rescuable:
        job = await inserter.get_job(job_id)
        assert job.state == "available"
        assert job.meta["rescued"] == 1
        assert job.attempt == 1
        assert job.errors[-1]["reason"] == "orphaned"
        assert job.errors[-1]["attempt"] == 1
    gone = await inserter.get_job(exhausted)
    assert gone.state == "discarded"
    assert gone.errors[-1]["reason"] == "exhausted"
    assert gone.meta.get("repair") == "exhausted"
    assert "rescued" not in gone.meta
    # Its jobs rescued, the dead node leaves nothing behind.
    assert producer_nodes(db_url) == []
    assert {p["node"] for p in meta["dead_producers"]} == {"victim"}

    # A second sweep finds nothing more to do (no double rescue).
    again = await lifeline.sweep(app)
    assert again["rescued_jobs"] == [] and again["discarded_jobs"] == []
    assert (await inserter.get_job(rescuable[0])).meta["rescued"] == 1

    healthy = make_app(queues={"default": 5}, node="healthy", refresh_interval=0.5, stale_after=2)
    heal_nodes.register(healthy, sleep=0.05)
    async with healthy:

        async def all_done() -> bool:
            return set((await states(inserter, rescuable)).values()) == {"completed"}

        await wait_for(all_done, timeout=20)
    me = os.getpid()
    for job_id in rescuable:
        job = await inserter.get_job(job_id)
        assert job.attempt == 2 and job.attempted_by[0] == "healthy"
        # Executed once by the dead node, once by the live one; only the live one finished.
        assert execs(db_url, job_id) == [(victim_pid, 1), (me, 2)]
        assert execs(db_url, job_id, "end") == [(me, 2)]
    assert execs(db_url, exhausted) == [(victim_pid, 1)]
    assert (await inserter.get_job(exhausted)).state == "discarded"


async def test_a_gracefully_stopped_node_hands_its_unfinished_jobs_back_at_once(db_url, side, spawn, make_app):
    inserter = make_app()
    w = heal_nodes.register(inserter, sleep=0.01)
    job = await inserter.insert(w["heal.sleeper"].new({"sleep": 30}, max_attempts=1))
    node = spawn("worker", db_url, node="leaving")
    await node.ready()
    await wait_for(lambda: started_count(db_url) == 1, timeout=20)
    stopping = time.monotonic()
    assert await node.terminate(timeout=15) == 0  # SIGTERM: graceful stop, shutdown_grace=1
    assert time.monotonic() - stopping < 5
    back = await inserter.get_job(job.id)
    assert back.state == "available"  # no Lifeline needed
    assert back.meta["rescued"] == 1
    assert back.errors[-1]["reason"] == "shutdown"
    assert back.max_attempts == 2  # stopping the node is not the job's fault
    assert producer_nodes(db_url) == []
    assert await inserter.drain() == {"completed": 1}


async def test_a_graceful_stop_flags_the_sync_attempts_it_hands_back(db_url, side, spawn, make_app):
    """The stopping node hands back the sync attempts still running after shutdown_grace; their
    threads cannot be stopped, so they are flagged as on a lost lease (`job.cancelled()`), and a
    worker that polls stops instead of running on beside the next attempt on another node. The
    node's process lives on after its Baton stopped (as under an ASGI server's lifespan), so
    its threads could run on: before, both ran to the end, each job twice at once."""
    inserter = make_app()
    w = heal_nodes.register(inserter, sleep=0.01)
    jobs = await inserter.insert_all([w["heal.poller"].new({"sleep": 60, "n": i}) for i in range(2)])
    ids = [j.id for j in jobs]
    node = spawn("worker", db_url, node="leaving", linger=60)
    await node.ready()
    await wait_for(lambda: started_count(db_url) == 2, timeout=20)
    node.signal(signal.SIGTERM)  # graceful stop, shutdown_grace=1; the process stays
    await wait_for(lambda: _all_in(inserter, ids, "available"), timeout=20)
    await wait_for(lambda: all(execs(db_url, i, "cancelled") for i in ids), timeout=20)
    assert node.proc.poll() is None  # still alive: only the flag stopped its threads
    leaving = node.pid
    for i in ids:
        back = await inserter.get_job(i)
        assert (back.attempt, [e["reason"] for e in back.errors]) == (1, ["shutdown"])
        assert execs(db_url, i, "cancelled") == [(leaving, 1)]
        assert execs(db_url, i, "end") == []
        # The stop waited for the flagged thread to stop before it handed the job back (one
        # host, one clock; SQLite's `at` has milliseconds).
        [(seen,)] = side_sql(db_url, "SELECT at FROM exec_log WHERE job_id = ? AND phase = 'cancelled'", (i,))
        handed_back = datetime.fromisoformat(back.errors[-1]["at"]).timestamp()
        assert float(seen) <= handed_back + 0.001
    assert await inserter.drain() == {"completed": 2}
    me = os.getpid()
    for i in ids:
        assert execs(db_url, i, "end") == [(me, 2)]
        assert (await inserter.get_job(i)).errors[-1]["reason"] == "shutdown"  # the stopped attempt wrote none


async def test_a_graceful_stop_flags_its_sync_attempts_before_handing_them_back(db_url, make_app):
    """Every sync attempt a stop hands back sees `job.cancelled()` by the time the hand-back is
    written (threads of workers with and without a timeout, which run on different paths), and
    an async one is cancelled; none of them writes an outcome of its own."""
    app = make_app(queues={"default": 5}, shutdown_grace=0.2)
    taken: dict[str, baton.Job] = {}
    ended = {kind: threading.Event() for kind in ("thread", "timed", "async")}

    def hold(job: baton.Job) -> None:
        taken[job.args["kind"]] = job
        try:
            end = time.monotonic() + 60
            while time.monotonic() < end:
                job.raise_if_cancelled()
                time.sleep(0.01)
        finally:
            ended[job.args["kind"]].set()

    async def hold_async(job: baton.Job) -> None:
        taken[job.args["kind"]] = job
        try:
            await asyncio.sleep(60)
        finally:
            ended[job.args["kind"]].set()

    thread = app.worker(name="stop.hold")(hold)
    timed = app.worker(name="stop.hold_timed", timeout=120)(hold)
    on_loop = app.worker(name="stop.hold_async")(hold_async)
    jobs = await app.insert_all(
        [thread.new({"kind": "thread"}), timed.new({"kind": "timed"}), on_loop.new({"kind": "async"})]
    )
    ids = [j.id for j in jobs]
    await app.start()
    await wait_for(lambda: len(taken) == 3, timeout=10)
    await app.stop()
    assert {kind: job.cancelled() for kind, job in taken.items()} == {"thread": True, "timed": True, "async": True}
    await wait_for(lambda: all(e.is_set() for e in ended.values()), timeout=20)
    back = [await app.get_job(i) for i in ids]
    assert [(j.state, j.attempt, [e["reason"] for e in j.errors]) for j in back] == [("available", 1, ["shutdown"])] * 3


async def _all_in(app: baton.Baton, ids: list[int], state: str) -> bool:
    return list((await states(app, ids)).values()) == [state] * len(ids)


async def test_retry_exhausted_gives_a_killed_job_one_more_attempt(db_url, side, spawn, make_app):
    inserter = make_app()
    w = heal_nodes.register(inserter, sleep=0.01)
    (job_id,), victim_pid = await kill_mid_job(
        spawn, db_url, inserter, [w["heal.sleeper"].new({"sleep": 30}, max_attempts=1)]
    )
    await asyncio.sleep(2.5)
    meta = await Lifeline(retry_exhausted=True).sweep(sweeper(make_app))
    assert meta["rescued_jobs"] == [{"id": job_id, "queue": "default", "state": "available"}]
    assert meta["discarded_jobs"] == []
    job = await inserter.get_job(job_id)
    assert job.state == "available"
    assert job.max_attempts == 2 and job.attempt == 1
    assert job.meta["rescued"] == 1
    assert job.errors[-1]["reason"] == "orphaned"
    assert await inserter.drain() == {"completed": 1}
    assert execs(db_url, job_id) == [(victim_pid, 1), (os.getpid(), 2)]


async def test_time_from_kill9_to_rescue_with_the_lifeline_on_a_live_node(db_url, engine_name, side, spawn, make_app):
    """Measured: kill -9 of a node with 5 running jobs -> all 5 `available` again, with the
    Lifeline (rescue_interval=1) running on a live node, stale_after=2."""
    inserter = make_app()
    w = heal_nodes.register(inserter)
    # The live node runs another queue so the rescued jobs stay visible as `available`.
    live = make_app(
        queues={"other": 1}, node="live", refresh_interval=0.5, stale_after=2, plugins=[Lifeline(rescue_interval=1)]
    )
    await live.start()
    jobs = await inserter.insert_all([w["heal.sleeper"].new({"n": i, "sleep": 30}) for i in range(5)])
    ids = [j.id for j in jobs]
    victim = spawn("worker", db_url, node="victim")
    await victim.ready()
    await wait_for(lambda: started_count(db_url) == 5, timeout=20)
    await wait_for(lambda: live.is_leader, timeout=10)

    killed = time.monotonic()
    victim.signal(signal.SIGKILL)

    async def all_rescued() -> bool:
        jobs = [await inserter.get_job(i) for i in ids]
        return all(j.state == "available" and j.meta.get("rescued") == 1 for j in jobs)

    await wait_for(all_rescued, timeout=15, interval=0.02)
    elapsed = time.monotonic() - killed
    print(
        f"\n[lifeline:{engine_name}] kill -9 -> 5 jobs available again in {elapsed:.2f}s "
        "(stale_after=2, refresh_interval=0.5, rescue_interval=1)"
    )
    # Bound: stale_after (2) + rescue_interval (1) + a heartbeat of slack.
    assert 1.4 <= elapsed < 4.5
    await wait_for(lambda: producer_nodes(db_url) == ["live"], timeout=5)


# --------------------------------------------------------------------------- live nodes are left alone


async def test_a_long_job_on_a_live_node_is_never_rescued(db_url, side, make_app, events):
    live = make_app(queues={"default": 1}, node="live", refresh_interval=0.3, stale_after=1)
    w = heal_nodes.register(live)
    app = sweeper(make_app, stale_after=1)
    lifeline = Lifeline()
    async with live:
        job = await live.insert(w["heal.sleeper"].new({"sleep": 3}))
        await wait_for(lambda: started_count(db_url) == 1, timeout=10)
        sweeps = 0
        while (await live.get_job(job.id)).state == "executing":
            meta = await lifeline.sweep(app)
            assert meta["rescued_jobs"] == [] and meta["discarded_jobs"] == []
            sweeps += 1
            await asyncio.sleep(0.3)
        done = await live.get_job(job.id)
    assert sweeps >= 6  # the sweeps spanned 3 stale_after periods
    assert done.state == "completed"
    assert done.attempt == 1
    assert "rescued" not in done.meta
    assert done.errors == []
    assert execs(db_url, job.id, "end") == [(os.getpid(), 1)]


async def test_a_job_running_in_drain_is_not_an_orphan(db_url, make_app):
    app = make_app()
    runs: list[int] = []

    @app.worker()
    async def slow(job: baton.Job) -> None:
        runs.append(job.attempt)
        await asyncio.sleep(0.5)

    job = await app.insert(slow.new({}))
    draining = asyncio.create_task(app.drain())
    await wait_for(lambda: _state_is(app, job.id, "executing"), timeout=5)
    meta = await Lifeline().sweep(sweeper(make_app))
    await draining
    assert meta["rescued_jobs"] == []
    done = await app.get_job(job.id)
    assert done.state == "completed" and done.attempt == 1
    assert runs == [1]


async def test_a_drained_job_longer_than_stale_after_is_never_rescued(db_url, make_app):
    """The drain's producer row is renewed while its job runs (it once was only between
    batches: a job outlasting stale_after was rescued from under the drain and run twice)."""
    app = make_app(refresh_interval=0.2, stale_after=0.6)
    runs: list[int] = []

    @app.worker()
    async def slow(job: baton.Job) -> None:
        runs.append(job.attempt)
        await asyncio.sleep(2.0)

    job = await app.insert(slow.new({}))
    draining = asyncio.create_task(app.drain())
    await wait_for(lambda: _state_is(app, job.id, "executing"), timeout=5)
    lifeline, other = Lifeline(), sweeper(make_app, stale_after=0.6)
    sweeps = 0
    while not draining.done():
        meta = await lifeline.sweep(other)
        assert meta["rescued_jobs"] == [] and meta["discarded_jobs"] == []
        sweeps += 1
        await asyncio.sleep(0.1)
    assert await draining == {"completed": 1}
    assert sweeps >= 10  # the sweeps spanned three stale_after periods
    done = await app.get_job(job.id)
    assert (done.state, done.attempt, done.errors) == ("completed", 1, [])
    assert "rescued" not in done.meta
    assert runs == [1]
    assert producer_nodes(db_url) == [], "the drain's producer row goes with it"


# A user's own `rescued` meta key that is not a count: the PostgreSQL sweep once cast it to an
# integer, failing every sweep (no orphan rescued at all) and every graceful hand-back.
ODD_RESCUED = ["by the fire brigade", 2.5, "7", True, -1, 10**12, {"by": "hand"}, None]


async def test_a_user_meta_rescued_that_is_not_a_count_never_fails_a_rescue(db_url, make_app):
    app = make_app()

    @app.worker()
    def noop(job: baton.Job) -> None:
        return None

    dead = str(uuid.uuid4())
    _producer(db_url, dead, "dead-node", age=120)
    odd = await app.insert_all([noop.new({"n": i}, meta={"rescued": v, "mine": i}) for i, v in enumerate(ODD_RESCUED)])
    counted, plain = await app.insert_all([noop.new({}, meta={"rescued": 4}), noop.new({})])
    for j in [*odd, counted, plain]:
        _orphan(db_url, j.id, dead)
    # The health page reads the user's values as no rescue (it once failed on PostgreSQL too).
    before = {r["id"]: r["rescued"] for r in (await app.engine.run(health, 60.0))["repairs"]}
    assert before.pop(counted.id) == 4 and set(before.values()) == {0}
    meta = await Lifeline().sweep(app)
    assert sorted(j["id"] for j in meta["rescued_jobs"]) == sorted(j.id for j in [*odd, counted, plain])
    for i, j in enumerate(odd):
        back = await app.get_job(j.id)
        assert back.state == "available" and back.meta == {"rescued": 1, "mine": i}, (ODD_RESCUED[i], back.meta)
    assert (await app.get_job(counted.id)).meta == {"rescued": 5}
    assert (await app.get_job(plain.id)).meta == {"rescued": 1}
    assert producer_nodes(db_url) == []
    # The health page reads the count back the same way.
    after = {r["id"]: r["rescued"] for r in (await app.engine.run(health, 60.0))["repairs"]}
    assert after == {**{j.id: 1 for j in [*odd, plain]}, counted.id: 5}


async def test_a_graceful_stop_hands_back_jobs_whatever_their_meta_rescued(db_url, make_app):
    app = make_app(queues={"default": 5}, shutdown_grace=0.2)

    @app.worker()
    async def slow(job: baton.Job) -> None:
        await asyncio.sleep(30)

    jobs = await app.insert_all([slow.new({}, meta={"rescued": v}) for v in ("yes", 1.5, 2)] + [slow.new({})])
    await app.start()
    await wait_for(lambda: _all_executing(app, [j.id for j in jobs]), timeout=10)
    await app.stop()
    back = [await app.get_job(j.id) for j in jobs]
    assert [(j.state, j.meta.get("rescued"), j.errors[-1]["reason"]) for j in back] == [
        ("available", 1, "shutdown"),
        ("available", 1, "shutdown"),
        ("available", 3, "shutdown"),
        ("available", 1, "shutdown"),
    ]
    assert producer_nodes(db_url) == []


async def _all_executing(app: baton.Baton, ids: list[int]) -> bool:
    return list((await states(app, ids)).values()) == ["executing"] * len(ids)


# --------------------------------------------------------------------------- exhausted, producers


async def test_available_jobs_with_no_attempts_left_are_discarded(db_url, make_app):
    app = make_app()

    @app.worker()
    def noop(job: baton.Job) -> None:
        return None

    spent, fine = await app.insert_all([noop.new({"n": 1}), noop.new({"n": 2})])
    side_sql(db_url, "UPDATE baton_jobs SET attempt = 3, max_attempts = 3 WHERE id = ?", (spent.id,))
    meta = await Lifeline().sweep(app)
    assert meta["rescued_jobs"] == []
    assert meta["discarded_jobs"] == [{"id": spent.id, "queue": "default", "state": "discarded"}]
    assert meta["repairs"].get("exhausted") == 1
    gone = await app.get_job(spent.id)
    assert gone.state == "discarded"
    assert gone.discarded_at is not None
    assert gone.errors[-1]["reason"] == "exhausted"
    assert (await app.get_job(fine.id)).state == "available"
    assert await app.drain() == {"completed": 1}


def _orphan(url: str, job_id: int, producer: str, attempt: int = 1) -> None:
    attempted_by = "json_array(?, ?)" if url.startswith("sqlite") else "ARRAY[?, ?]::text[]"
    side_sql(
        url,
        f"UPDATE baton_jobs SET state = 'executing', attempt = ?, attempted_at = {now_sql(url)}, "
        f"attempted_by = {attempted_by} WHERE id = ?",
        (attempt, "ghost", producer, job_id),
    )


def _producer(url: str, producer: str, node: str, age: float) -> None:
    side_sql(
        url,
        "INSERT INTO baton_producers (uuid, node, queue, meta, started_at, updated_at) "
        f"VALUES (?, ?, 'default', '{{}}', {ago_sql(url, age)}, {ago_sql(url, age)})",
        (producer, node),
    )


async def test_dead_producer_rows_are_deleted_only_once_their_jobs_are_rescued(db_url, engine_name, make_app, request):
    app = make_app()

    @app.worker()
    def noop(job: baton.Job) -> None:
        return None

    dead, empty, alive = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    _producer(db_url, dead, "dead-node", age=120)
    _producer(db_url, empty, "dead-idle-node", age=120)
    _producer(db_url, alive, "live-node", age=0)
    jobs = await app.insert_all([noop.new({"n": i}) for i in range(3)])
    _orphan(db_url, jobs[0].id, dead)
    _orphan(db_url, jobs[1].id, dead)
    _orphan(db_url, jobs[2].id, alive)

    lifeline = Lifeline(limit=1)
    first = await lifeline.sweep(app)
    assert [j["id"] for j in first["rescued_jobs"]] == [jobs[0].id]
    # One of its jobs is still executing: the dead producer's row stays; the idle one goes.
    assert producer_nodes(db_url) == ["dead-node", "live-node"]
    assert [p["node"] for p in first["dead_producers"]] == ["dead-idle-node"]
    second = await lifeline.sweep(app)
    assert [j["id"] for j in second["rescued_jobs"]] == [jobs[1].id]
    assert producer_nodes(db_url) == ["live-node"]
    assert (await app.get_job(jobs[2].id)).state == "executing"  # its producer is alive

    # A missing producer row counts as dead too.
    side_sql(db_url, "DELETE FROM baton_producers")
    third = await lifeline.sweep(app)
    assert [j["id"] for j in third["rescued_jobs"]] == [jobs[2].id]


# --------------------------------------------------------------------------- stuck workflows and chains


async def _ack_lost_workflow(db_url: str, app: baton.Baton) -> tuple[str, int, int]:
    """A workflow a -> b whose step `a` completed behind Baton's back (no ack, so nothing
    resolved `a` nor released `b`)."""

    @app.worker()
    def step(job: baton.Job) -> int:
        return len(job.step or "")

    wf = baton.Workflow(label="missed-ack")
    wf.add("a", step.new({}))
    wf.add("b", step.new({}), deps=["a"])
    wid = await app.insert_workflow(wf)
    status = await app.workflow_status(wid)
    a, b = status.details["a"].job_id, status.details["b"].job_id
    side_sql(
        db_url,
        f"UPDATE baton_jobs SET state = 'completed', attempt = 1, completed_at = {now_sql(db_url)} WHERE id = ?",
        (a,),
    )
    assert await app.drain() == {}
    assert (await app.get_job(b)).state == "suspended"
    return wid, a, b


async def test_missed_workflow_release_after_a_step_completed_without_its_ack(db_url, make_app, events):
    events.attach(("baton", "workflow", "finished"))
    app = make_app()
    finished: list[dict[str, Any]] = []
    app.on_workflow_finished(finished.append)
    wid, _a, b = await _ack_lost_workflow(db_url, app)

    meta = await Lifeline().sweep(app)
    assert meta["released_steps"] == [b]
    assert meta["repairs"] == {"missed_release": 1}
    assert (await app.get_job(b)).state == "available"
    assert await app.drain() == {"completed": 1}
    status = await app.workflow_status(wid)
    assert status.finished and status.status == "completed"
    assert status.steps == {"a": "completed", "b": "completed"}
    assert [e["workflow_id"] for e in finished] == [wid]
    assert len(events.of(("baton", "workflow", "finished"))) == 1
    assert (await Lifeline().sweep(app))["released_steps"] == []


async def test_step_released_after_a_lost_ack_names_the_repair_in_its_meta(db_url, make_app):
    app = make_app()
    _wid, _a, b = await _ack_lost_workflow(db_url, app)
    await Lifeline().sweep(app)
    released = await app.get_job(b)
    assert released.state == "available"
    assert released.meta.get("repair") == "missed_release"


async def test_missed_workflow_release_of_a_step_left_suspended(db_url, make_app):
    app = make_app()
    finished: list[dict[str, Any]] = []
    app.on_workflow_finished(finished.append)

    @app.worker()
    def step(job: baton.Job) -> int:
        return len(job.step or "")

    wf = baton.Workflow(label="lost-release")
    wf.add("a", step.new({}))
    wf.add("b", step.new({}, queue="later"), deps=["a"])
    wid = await app.insert_workflow(wf)
    assert await app.drain(queue="default") == {"completed": 1}
    b = (await app.workflow_status(wid)).details["b"].job_id
    assert (await app.get_job(b)).state == "available"
    side_sql(db_url, "UPDATE baton_jobs SET state = 'suspended' WHERE id = ?", (b,))  # the release is lost
    before = await app.workflow_status(wid)
    assert "missed_release" in before.waiting["b"]

    meta = await Lifeline().sweep(app)
    assert meta["released_steps"] == [b]
    assert meta["repairs"] == {"missed_release": 1}
    job = await app.get_job(b)
    assert job.state == "available" and job.meta["repair"] == "missed_release"
    assert await app.drain() == {"completed": 1}
    status = await app.workflow_status(wid)
    assert status.finished and status.status == "completed"
    assert [e["workflow_id"] for e in finished] == [wid]
    # Nothing left to repair.
    assert (await Lifeline().sweep(app))["released_steps"] == []


async def test_stuck_chain_link_is_released(db_url, make_app):
    app = make_app()
    ran: list[int] = []

    @app.worker(chain_by=["args.account"])
    def link(job: baton.Job) -> None:
        ran.append(job.args["seq"])

    jobs = await app.insert_all([link.new({"account": 7, "seq": i}) for i in range(3)])
    assert [j.state for j in jobs] == ["available", "suspended", "suspended"]
    # The first link finishes without its ack (nothing releases the second).
    side_sql(
        db_url,
        f"UPDATE baton_jobs SET state = 'completed', attempt = 1, completed_at = {now_sql(db_url)} WHERE id = ?",
        (jobs[0].id,),
    )
    assert await app.drain() == {}
    meta = await Lifeline().sweep(app)
    assert meta["released_links"] == [jobs[1].id]
    assert meta["repairs"] == {"missed_release": 1}
    job = await app.get_job(jobs[1].id)
    assert job.state == "available" and job.meta["repair"] == "missed_release"
    assert (await app.get_job(jobs[2].id)).state == "suspended"
    assert await app.drain() == {"completed": 2}
    assert ran == [1, 2]
    assert (await Lifeline().sweep(app))["released_links"] == []


@pytest.mark.parametrize("ignore_deleted", [False, True])
async def test_a_step_whose_dependency_was_deleted_follows_ignore_deleted(db_url, make_app, ignore_deleted):
    app = make_app()

    @app.worker()
    def step(job: baton.Job) -> int:
        return 1

    wf = baton.Workflow(label="dep-deleted")
    wf.add("a", step.new({}, queue="parked"))
    wf.add("b", step.new({}), deps=["a"], ignore_deleted=ignore_deleted)
    wf.add("c", step.new({}), deps=["b"])
    wid = await app.insert_workflow(wf)
    ids = {n: s.job_id for n, s in (await app.workflow_status(wid)).details.items()}
    side_sql(db_url, "DELETE FROM baton_jobs WHERE id = ?", (ids["a"],))

    meta = await Lifeline().sweep(app)
    b, c = await app.get_job(ids["b"]), await app.get_job(ids["c"])
    if ignore_deleted:
        assert meta["released_steps"] == [ids["b"]] and meta["cancelled_steps"] == []
        assert b.state == "available"
        assert await app.drain() == {"completed": 2}
        status = await app.workflow_status(wid)
        assert status.finished and status.status == "completed"
    else:
        assert sorted(meta["cancelled_steps"]) == [ids["b"], ids["c"]]
        assert meta["repairs"]["dep_deleted"] >= 1
        assert b.state == "cancelled" and b.meta["repair"] == "dep_deleted"
        assert b.errors[-1]["reason"] == "dep_deleted"
        assert c.state == "cancelled" and c.meta["repair"] == "dep_cancelled"
        status = await app.workflow_status(wid)
        assert status.finished and status.status == "failed"


async def test_an_exhausted_orphan_step_cascades_and_finishes_its_workflow(db_url, make_app, events):
    events.attach(("baton", "workflow", "finished"))
    app = make_app()

    @app.worker()
    def step(job: baton.Job) -> int:
        return 1

    wf = baton.Workflow(label="crashy")
    wf.add("a", step.new({}, max_attempts=1))
    wf.add("b", step.new({}), deps=["a"])
    wid = await app.insert_workflow(wf)
    ids = {n: s.job_id for n, s in (await app.workflow_status(wid)).details.items()}
    _orphan(db_url, ids["a"], str(uuid.uuid4()))  # its node died mid-attempt, no attempts left

    meta = await Lifeline().sweep(app)
    assert meta["discarded_jobs"] == [{"id": ids["a"], "queue": "default", "state": "discarded"}]
    assert (await app.get_job(ids["b"])).state == "cancelled"
    status = await app.workflow_status(wid)
    assert status.finished and status.status == "failed"
    assert [md["status"] for _, md in events.of(("baton", "workflow", "finished"))] == ["failed"]


async def test_an_exhausted_orphan_link_releases_the_next_link(db_url, make_app):
    app = make_app()

    @app.worker(chain_by=["args.account"])
    def link(job: baton.Job) -> None:
        return None

    jobs = await app.insert_all([link.new({"account": 1, "seq": i}, max_attempts=1) for i in range(2)])
    _orphan(db_url, jobs[0].id, str(uuid.uuid4()))
    meta = await Lifeline().sweep(app)
    assert [j["id"] for j in meta["discarded_jobs"]] == [jobs[0].id]
    assert (await app.get_job(jobs[1].id)).state == "available"
    assert await app.drain() == {"completed": 1}


def test_bad_options_are_rejected_naming_the_field():
    with pytest.raises(baton.ValidationError) as err:
        Lifeline(retry_exhausted="yes")
    assert err.value.field == "retry_exhausted"
    for field, options in (("timeout", {"timeout": 0}), ("limit", {"limit": 0})):
        with pytest.raises(baton.ValidationError) as err:
            Lifeline(**options)
        assert err.value.field == field


def test_a_bad_rescue_interval_is_named_rescue_interval():
    with pytest.raises(baton.ValidationError) as err:
        Lifeline(rescue_interval=0)
    assert err.value.field == "rescue_interval"


# --------------------------------------------------------------------------- fenced acks


async def test_late_ack_of_a_frozen_rescued_node_is_fenced(db_url, side, spawn, make_app):
    inserter = make_app()
    w = heal_nodes.register(inserter)
    job = await inserter.insert(w["heal.sleeper"].new({"sleep": 2}))
    # Without its lease guard: with it, the frozen node would (usually) notice its lost lease on
    # waking and not send this ack at all (tests/test_lease.py); the fence is what is tested here.
    first = spawn("worker", db_url, node="frozen", lease_guard=False)
    await first.ready()
    await wait_for(lambda: started_count(db_url) == 1, timeout=20)
    first.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(2.5)
        meta = await Lifeline().sweep(sweeper(make_app))
        assert [j["id"] for j in meta["rescued_jobs"]] == [job.id]

        second = make_app(queues={"default": 1}, node="second", refresh_interval=0.5, stale_after=2)
        heal_nodes.register(second, sleep=0.05)
        async with second:
            await wait_for(lambda: _state_is(inserter, job.id, "completed"), timeout=15)
        done = await inserter.get_job(job.id)
        assert done.attempted_by[0] == "second" and done.attempt == 2
    finally:
        first.signal(signal.SIGCONT)
    # The frozen node wakes up, its body finishes, its ack is dropped.
    await wait_for(lambda: side_sql(db_url, "SELECT job_id, reason, node FROM fenced"), timeout=15)
    assert side_sql(db_url, "SELECT job_id, reason, node FROM fenced") == [(job.id, "rescued", "frozen")]
    after = await inserter.get_job(job.id)
    assert after.state == "completed"
    assert after.completed_at == done.completed_at
    assert after.attempted_by == done.attempted_by and after.attempt == 2
    assert execs(db_url, job.id) == [(first.pid, 1), (os.getpid(), 2)]
    assert execs(db_url, job.id, "end") == [(first.pid, 1), (os.getpid(), 2)]
    assert [e["reason"] for e in after.errors] == ["orphaned"]
    assert await first.terminate() == 0


async def _state_is(app: baton.Baton, job_id: int, state: str) -> bool:
    job = await app.get_job(job_id)
    return job is not None and job.state == state
