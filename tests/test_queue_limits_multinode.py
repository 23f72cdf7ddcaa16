"""Queue limits held across real node processes (SPEC 9.3, docs/limits.md): three nodes under
a global limit of 5 never run more than 5 jobs at once (sampled from the side table the jobs
write, and from the database while they run) and reach 5; 100 tenants limited to one job each;
a rate limit never lets more than `allowed` start in any window and keeps going; a node killed
with SIGKILL holds its slots until its jobs are rescued, then they come back.

Both engines: SQLite's BEGIN IMMEDIATE serialises the fetches of processes sharing the file
as PostgreSQL's advisory lock does. The full-size runs (a 20 s rate window at 50 per 2 s,
overhead figures) are in bench/limits.py."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import baton
import nodes
from baton.plugins.lifeline import Lifeline
from conftest import wait_for
from test_multinode import Proc, _query
from test_queue_limits import windows_over

LIMIT_NODES = str(Path(__file__).with_name("limit_nodes.py"))


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals (start, end) open at the same instant."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


@contextlib.asynccontextmanager
async def limited_nodes(url: str, queues: dict[str, Any], count: int) -> AsyncIterator[list[Proc]]:
    procs = []
    for i in range(count):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            LIMIT_NODES,
            url,
            json.dumps(queues),
            "--name",
            f"node{i}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        procs.append(Proc(proc))
    try:
        for p in procs:
            await p.expect("READY")
        yield procs
    finally:
        for p in procs:
            if p.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.proc.send_signal(signal.SIGTERM)
        for p in procs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.proc.wait(), 20)
            if p.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.proc.kill()


@pytest.fixture
def exec_log(db_url: str) -> Any:
    _query(db_url, "DROP TABLE IF EXISTS exec_log")
    _query(db_url, nodes.EXEC_LOG_DDL)
    yield
    _query(db_url, "DROP TABLE IF EXISTS exec_log")


async def sample_executing(url: str, stop: asyncio.Event, seen: list[int]) -> None:
    """The executing count of the queue, read from the database every few milliseconds."""
    while not stop.is_set():
        ((n,),) = await asyncio.to_thread(_query, url, "SELECT count(*) FROM baton_jobs WHERE state = 'executing'")
        seen.append(n)
        await asyncio.sleep(0.01)


async def run_all(app: baton.Baton, count: int, timeout: float) -> None:
    async def done() -> bool:
        return (await app.count_jobs()).get("completed", 0) == count

    await wait_for(done, timeout, interval=0.1)


async def test_three_nodes_never_run_more_than_the_global_limit_and_reach_it(
    db_url: str, exec_log: None, make_app: Callable[..., baton.Baton]
):
    # Each node may run 4 at once: 12 in all without the global limit of 5.
    queues = {"api": {"limit": 4, "global_limit": 5}}
    inserter = make_app()
    jobs = 150
    seen: list[int] = []
    stop = asyncio.Event()
    async with limited_nodes(db_url, queues, 3):
        sampler = asyncio.create_task(sample_executing(db_url, stop, seen))
        await inserter.insert_all([nodes.Record.new({"n": i, "sleep": 0.05}, queue="api") for i in range(jobs)])
        await run_all(inserter, jobs, 60)
        stop.set()
        await sampler
    log = _query(db_url, "SELECT pid, started, ended FROM exec_log")
    assert len(log) == jobs
    assert most_at_once([(s, e) for _, s, e in log]) == 5, "never more than 5 at once, and 5 reached"
    assert max(seen) <= 5
    assert len({pid for pid, _, _ in log}) >= 2, "reaching 5 took more than one node"


async def test_a_hundred_tenants_run_one_job_each_at_most(
    db_url: str, exec_log: None, make_app: Callable[..., baton.Baton]
):
    partition = {"fields": ["args"], "keys": ["tenant"]}
    queues = {"api": {"limit": 20, "global_limit": {"allowed": 1, "partition": partition}}}
    inserter = make_app()
    # Three jobs per tenant, tenant after tenant: the head of the queue is one tenant at a time.
    specs = [nodes.Record.new({"tenant": t, "n": i, "sleep": 0.05}, queue="api") for t in range(100) for i in range(3)]
    async with limited_nodes(db_url, queues, 3):
        jobs = await inserter.insert_all(specs)
        await run_all(inserter, len(specs), 90)
    tenant_of = {j.id: j.args["tenant"] for j in jobs}
    runs: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for job_id, started, ended in _query(db_url, "SELECT job_id, started, ended FROM exec_log"):
        runs[tenant_of[job_id]].append((started, ended))
    assert len(runs) == 100
    assert max(most_at_once(r) for r in runs.values()) == 1, "one job per tenant at a time"
    overall = most_at_once([r for rs in runs.values() for r in rs])
    assert overall > 20, f"tenants ran side by side on several nodes ({overall} at once at most)"


async def check_rate(db_url: str, make_app: Callable[..., baton.Baton], allowed: int, period: float, span: float):
    queues = {"api": {"limit": 50, "rate_limit": {"allowed": allowed, "period": period}}}
    inserter = make_app()
    count = int(allowed * span / period)
    async with limited_nodes(db_url, queues, 3):
        await inserter.insert_all([nodes.Record.new({"n": i}, queue="api") for i in range(count)])
        await run_all(inserter, count, span * 4 + 30)
    # attempted_at is the start the limit stamps (one clock: the database's, or the host's).
    starts = [j.attempted_at.timestamp() for j in await inserter.list_jobs(states=["completed"], limit=count)]
    assert len(starts) == count
    assert windows_over(starts, period) == allowed, "full windows, never more than allowed"
    # No stall: every window after the first started jobs (a gap of a whole window would mean
    # the nodes stopped fetching while jobs waited).
    starts.sort()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert max(gaps) < 2 * period, f"a gap of {max(gaps):.2f}s between starts"


async def test_a_rate_limit_holds_across_three_nodes(db_url: str, exec_log: None, make_app: Callable[..., baton.Baton]):
    await check_rate(db_url, make_app, allowed=20, period=1.0, span=4.0)


@pytest.mark.slow
async def test_a_rate_limit_of_50_per_2s_holds_for_20s(
    db_url: str, exec_log: None, make_app: Callable[..., baton.Baton]
):
    if not db_url.startswith("postgres"):
        pytest.skip("the 20 s run is for PostgreSQL; test_a_rate_limit_holds_across_three_nodes covers SQLite")
    await check_rate(db_url, make_app, allowed=50, period=2.0, span=20.0)


async def test_a_killed_node_holds_its_slots_until_its_jobs_are_rescued(
    db_url: str, exec_log: None, make_app: Callable[..., baton.Baton]
):
    queues = {"api": {"limit": 2, "global_limit": 5}}
    inserter = make_app(refresh_interval=0.5, stale_after=2.0)
    async with limited_nodes(db_url, queues, 3) as procs:
        jobs = await inserter.insert_all([nodes.Record.new({"n": i, "sleep": 3.0}, queue="api") for i in range(12)])

        async def five_executing() -> list[baton.Job]:
            running = await inserter.list_jobs(states=["executing"], limit=100)
            return running if len(running) == 5 else []

        running = await wait_for(five_executing, 20)
        by_node: dict[str, list[int]] = defaultdict(list)
        for job in running:
            by_node[job.attempted_by[0]].append(job.id)
        victim = procs[int(max(by_node, key=lambda n: len(by_node[n])).removeprefix("node"))]
        held = by_node[f"node{procs.index(victim)}"]
        victim.proc.kill()
        await victim.proc.wait()

        # Until the rescue, the dead node's jobs stay executing and keep their slots.
        await asyncio.sleep(1.0)
        still = {j.id for j in await inserter.list_jobs(states=["executing"], limit=100)}
        assert set(held) <= still
        assert len(still) <= 5

        await asyncio.sleep(2.5)  # its producer is now stale (stale_after=2)
        await Lifeline().sweep(inserter)
        rescued = {j.id for j in await inserter.list_jobs(ids=held) if j.state != "executing"}
        assert rescued == set(held), "the rescue hands the dead node's jobs back"

        async def slots_back() -> bool:
            # The two live nodes (2 slots each) run 4 again: the dead node's slots came back.
            return (await inserter.count_jobs()).get("executing") == 4

        await wait_for(slots_back, 20)
        await run_all(inserter, len(jobs), 60)
    log = _query(db_url, "SELECT job_id, started, ended FROM exec_log")
    finished = [(s, e) for _, s, e in log if e is not None]
    assert most_at_once(finished) <= 5
