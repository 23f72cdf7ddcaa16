"""Overload and misbehaving workers (SPEC sections 2, 5 and 7):

- a tiny connection pool under many concurrent inserts and acks, while the database stalls
  (a lock holds every write for longer than the pool's timeout): callers get a
  `DatabaseUnavailable` or their ids, never a silent loss, and the nodes carry on;
- a Lifeline sweep that hits its statement timeout fails cleanly (an exception event, nothing
  half-done) and the next sweep runs normally;
- a worker that blocks the event loop for longer than `stale_after`: its node looks dead, its
  jobs are rescued by another node, and the blocked node's late acks are fenced, so nothing
  is completed twice;
- a worker that leaks memory until allocation fails: the node keeps processing the others, even
  while no worker thread can be started.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import fault_node
import psycopg
import pytest
from harness import ChaosConfig, Driver, FaultDatabase, assert_no_violations, run_scenario, wait_for

import baton
from baton.plugins import Lifeline

pytestmark = pytest.mark.faults


async def stall_writes(db: FaultDatabase, seconds: float) -> None:
    """Hold the write lock of `baton_jobs` for `seconds`: every insert, fetch and ack waits,
    each holding its pooled connection (PostgreSQL) or the writer lock queue (SQLite)."""

    def hold() -> None:
        if db.postgres:
            with psycopg.connect(db.url) as conn:
                conn.execute("LOCK TABLE baton_jobs IN EXCLUSIVE MODE")
                time.sleep(seconds)
        else:
            conn = sqlite3.connect(fault_node.sqlite_path(db.url), isolation_level=None, timeout=30)
            try:
                conn.execute("BEGIN IMMEDIATE")
                time.sleep(seconds)
                conn.execute("COMMIT")
            finally:
                conn.close()

    await asyncio.to_thread(hold)


# --------------------------------------------------------------------------- pool exhaustion


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
async def test_a_tiny_pool_and_a_stalled_database_lose_nothing(fault_db, engine, tmp_path):
    """pool_size=2 on the nodes and on an inserter running 12 concurrent insert lanes; then
    every write stalls for longer than the 10 s pool timeout (PostgreSQL) or than SQLite's
    busy timeout. Every insert call either returned ids that exist and run exactly once, or
    raised a BatonError; the nodes come back on their own."""
    db = await fault_db(engine)
    stall = 11.0 if engine == "postgres" else 6.0
    config = ChaosConfig(
        name=f"pool_size=2, 12 insert lanes, writes stalled {stall:g} s",
        jobs=500,
        workflows=8,
        nodes=2,
        feed_seconds=2 + stall,
        kill_interval=None,
        inserter=True,
        inserter_lanes=12,
        inserter_pool_size=2,
        node_options={"pool_size": 2},
    )

    async def stall_midway(_driver: Driver) -> None:
        await asyncio.sleep(1.5)
        await stall_writes(db, stall)

    result = await run_scenario(db, config, tmp_path, stall_midway)

    assert_no_violations(result)
    figures = result.figures
    assert figures["insert calls that returned ids"] > 100
    assert figures["  of which not a BatonError"] == 0
    if engine == "postgres":
        # Lanes waiting for one of two connections longer than the pool timeout were told so.
        assert figures["inserter errors"].get("baton.errors.DatabaseUnavailable", 0) > 0, figures


# --------------------------------------------------------------------------- statement timeouts


async def test_a_lifeline_sweep_that_times_out_fails_cleanly_and_the_next_one_runs_normally(fault_db, events):
    db = await fault_db("postgres")
    orphans = 3_000
    inserter = baton.Baton(db.url, plugins=[], log_events=False)
    work = fault_node.register(inserter)["chaos.work"]
    jobs = await inserter.insert_all([work.new({"sleep": 0}) for _ in range(orphans)])
    await inserter.close()
    # Executing for a producer that never existed: orphans of a node that died long ago.
    db.query(
        "UPDATE baton_jobs SET state = 'executing', attempt = 1, attempted_at = now(), "
        "attempted_by = ARRAY['ghost', '00000000-0000-0000-0000-000000000000']"
    )
    lifeline = Lifeline(rescue_interval=0.5, timeout=0.001)
    app = baton.Baton(
        db.url,
        queues={"default": 20},
        plugins=[lifeline],
        refresh_interval=0.5,
        stale_after=2,
        poll_interval=0.2,
        log_events=False,
    )
    fault_node.register(app)
    events.attach(("baton", "plugin", "exception"), ("baton", "plugin", "stop"))

    def lifeline_events(kind: str) -> list[dict[str, Any]]:
        return [md for _, md in events.of(("baton", "plugin", kind)) if md["plugin"] == "lifeline"]

    async with app:
        await wait_for(lambda: len(lifeline_events("exception")) >= 2, timeout=15)
        for meta in lifeline_events("exception"):
            assert "statement timeout" in meta["error"], meta["error"]
        assert not lifeline_events("stop"), "a sweep that timed out reported success"
        ghosts = "SELECT count(*) FROM baton_jobs WHERE state = 'executing' AND attempted_by[1] = 'ghost'"
        assert db.query(ghosts) == [(orphans,)], "a failed sweep left half its work done"

        # The node keeps working while its sweeps fail.
        fresh = await app.insert_all([work.new({"sleep": 0}) for _ in range(30)])

        async def fresh_done() -> bool:
            return len(await app.list_jobs(ids=[j.id for j in fresh], states=["completed"])) == len(fresh)

        await wait_for(fresh_done, timeout=15)

        lifeline.timeout = 30.0  # the next sweep has time enough, and runs normally
        await wait_for(lambda: lifeline_events("stop"), timeout=15)
        rescued = sum(len(md["rescued_jobs"]) for md in lifeline_events("stop"))
        assert rescued == orphans

        async def all_completed() -> bool:
            return (await app.count_jobs()).get("completed", 0) == orphans + len(fresh)

        await wait_for(all_completed, timeout=60, interval=0.2)
    (twice,) = db.query(
        "SELECT count(*) FROM (SELECT job_id FROM chaos_transitions WHERE new_state = 'completed' "
        "GROUP BY job_id HAVING count(*) > 1) t"
    )[0]
    assert twice == 0
    assert {j.id for j in jobs} <= {r[0] for r in db.query("SELECT id FROM baton_jobs WHERE state = 'completed'")}


# --------------------------------------------------------------------------- a blocked event loop


async def test_a_worker_blocking_the_event_loop_has_its_jobs_rescued_and_its_late_acks_fenced(fault_db, tmp_path):
    db = await fault_db("postgres")
    block = fault_node.STALE_AFTER + 2 * fault_node.RESCUE_INTERVAL + 2.0
    config = ChaosConfig(
        name=f"an async worker blocks its node's event loop for {block:g} s",
        jobs=600,
        workflows=6,
        nodes=2,
        feed_seconds=4 + block,
        kill_interval=None,
    )
    blockers: list[int] = []

    async def add_blockers(driver: Driver) -> None:
        await asyncio.sleep(1)
        job = await driver.app.insert(driver.workers["chaos.block"].new({"block": block}))
        driver.expected[job.id] = "completed"
        blockers.append(job.id)

    result = await run_scenario(db, config, tmp_path, add_blockers)

    assert_no_violations(result)
    assert result.figures["fenced acks"] >= 1, "the blocked node's late acks were fenced"
    for job_id in blockers:
        runs = db.side("SELECT attempt, node FROM chaos_exec WHERE job_id = ? ORDER BY attempt", (job_id,))
        assert [a for a, _ in runs][:2] == [1, 2], f"blocker {job_id} ran {runs}: rescued and run again"
        (completions,) = db.query(
            "SELECT count(*) FROM chaos_transitions WHERE job_id = ? AND new_state = 'completed'", (job_id,)
        )[0]
        assert completions == 1
    fenced = {r[0] for r in db.side("SELECT job_id FROM chaos_events WHERE kind = 'fenced'")}
    assert fenced & set(blockers), "the blocker's own late completion was dropped"


# --------------------------------------------------------------------------- a leaking worker


async def test_a_worker_that_leaks_memory_does_not_stop_its_node(fault_db, tmp_path):
    """One node, its address space capped at 700 MB; a worker grows its allocations until
    they fail (MemoryError). The node survives, records the error on that job (discarded
    after its 2 attempts) and completes everything else."""
    db = await fault_db("postgres")
    config = ChaosConfig(
        name="a worker leaks memory until allocation fails (address space capped at 700 MB)",
        jobs=800,
        workflows=8,
        nodes=1,
        feed_seconds=8,
        kill_interval=None,
        node_options={"memory_limit_mb": 700},
    )
    leakers: list[int] = []

    async def add_leakers(driver: Driver) -> None:
        await asyncio.sleep(1)
        spec = driver.workers["chaos.leak"].new({"chunk_mb": 16, "pause": 0.05})
        for job in await driver.app.insert_all([spec, spec]):
            driver.expected[job.id] = "discarded"
            leakers.append(job.id)

    result = await run_scenario(db, config, tmp_path, add_leakers)

    assert_no_violations(result)
    for job_id in leakers:
        (errors,) = db.query("SELECT errors FROM baton_jobs WHERE id = ?", (job_id,))[0]
        assert errors and all("MemoryError" in e["error"] for e in errors), errors


async def test_a_node_at_its_memory_limit_runs_every_job_though_no_thread_can_start(fault_db, tmp_path):
    """A job takes all the memory a node's address space allows and holds it while 100 short
    jobs arrive: the node's worker-thread pool must grow and cannot (no memory for a thread's
    stack). The short jobs wait for the threads already running and all complete; the leaking
    job fails with its MemoryError. (Before the fix the failed thread start killed the
    producer: the node heartbeated on and ran nothing, 0 of 100.)"""
    db = await fault_db("postgres")
    program = Path(__file__).with_name("starved_node.py")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(program),
        db.url,
        "700",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "MALLOC_ARENA_MAX": "2"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["completed"] == result["short"] == 100, (result, err.decode()[-3000:])
    assert result["leak_state"] == "discarded"
    assert result["leak_errors"] and result["leak_errors"][0].startswith("MemoryError"), result
