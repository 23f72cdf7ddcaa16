"""Several real processes on one database (SPEC sections 1 and 2): concurrent unique inserts
never make a second row; nodes fetching the same queue run every job exactly once; a node
stopped with SIGTERM finishes what it can within `shutdown_grace` and hands the rest back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sqlite3
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

import nodes
from conftest import wait_for

NODES = str(Path(__file__).with_name("nodes.py"))


# --------------------------------------------------------------------------- helpers


def _query(url: str, query: str) -> list[tuple[Any, ...]]:
    if url.startswith("postgres"):
        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description else []
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


class Proc:
    """A subprocess running tests/nodes.py, with line-by-line access to its stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def expect(self, line: str, timeout: float = 30.0) -> None:
        assert self.proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not raw:
                stderr = await self.proc.stderr.read() if self.proc.stderr else b""
                raise AssertionError(f"process exited before printing {line!r}: {stderr.decode()[-3000:]}")
            text = raw.decode().strip()
            self.lines.append(text)
            if text == line:
                return

    async def rest(self, timeout: float = 30.0) -> tuple[int, list[str], str]:
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        self.lines += out.decode().splitlines()
        return self.proc.returncode or 0, self.lines, err.decode()


async def spawn(*args: str) -> Proc:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        NODES,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return Proc(proc)


@contextlib.asynccontextmanager
async def processes(*argvs: Sequence[str]) -> AsyncIterator[list[Proc]]:
    procs = [await spawn(*argv) for argv in argvs]
    try:
        yield procs
    finally:
        for p in procs:
            if p.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.proc.kill()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(p.proc.wait(), 10)


# --------------------------------------------------------------------------- (a) unique race


async def test_unique_inserts_racing_from_two_processes_make_exactly_one_row(db_url, tmp_path):
    count = 200
    barrier = tmp_path / "go"
    async with processes(
        ["unique", db_url, str(barrier), str(count)], ["unique", db_url, str(barrier), str(count)]
    ) as procs:
        for p in procs:
            await p.expect("READY")
        barrier.touch()
        results = []
        for p in procs:
            code, lines, err = await p.rest(60)
            assert code == 0, err[-3000:]
            results.append(json.loads(lines[-1]))

    # Every key was inserted by both processes: one row each, whoever won.
    keys = 1 + 50
    rows = _query(db_url, "SELECT args, count(*) FROM baton_jobs GROUP BY args")
    assert len(rows) == keys, f"{len(rows)} distinct jobs for {keys} unique keys"
    assert all(n == 1 for _, n in rows), [r for r in rows if r[1] != 1][:5]
    ((total,),) = _query(db_url, "SELECT count(*) FROM baton_jobs")
    assert total == keys
    inserted = [i for r in results for i in r["inserted"]]
    assert len(inserted) == keys, "exactly one insert per key reports conflict=False"
    assert len(set(inserted)) == len(inserted)
    assert sum(r["conflicts"] for r in results) == 2 * (count + 50) - keys


# --------------------------------------------------------------------------- (b) shared queue


async def test_nodes_sharing_a_queue_run_every_job_exactly_once(db_url, make_app):
    jobs_count, node_count = 3_000, 3
    _query(db_url, "DROP TABLE IF EXISTS exec_log")
    _query(db_url, nodes.EXEC_LOG_DDL)
    inserter = make_app()
    try:
        argv = ["node", db_url, "--queues", "default:10", "--grace", "5", "--lifetime", "90"]
        async with processes(*[argv] * node_count) as procs:
            for p in procs:
                await p.expect("READY")
            ((producers,),) = _query(db_url, "SELECT count(*) FROM baton_producers")
            assert producers == node_count

            jobs = await inserter.insert_all([nodes.Record.new({"n": i, "sleep": 0.001}) for i in range(jobs_count)])
            assert len(jobs) == jobs_count

            async def all_done() -> bool:
                counts = await inserter.count_jobs()
                return counts.get("completed", 0) == jobs_count

            await wait_for(all_done, 60, interval=0.2)
            for p in procs:
                p.proc.send_signal(signal.SIGTERM)
            for p in procs:
                code, lines, err = await p.rest(30)
                assert code == 0, err[-3000:]
                assert "STOPPED" in lines

        states = _query(db_url, "SELECT state, attempt, count(*) FROM baton_jobs GROUP BY state, attempt")
        assert states == [("completed", 1, jobs_count)], states
        log = _query(db_url, "SELECT job_id, pid, started, ended FROM exec_log ORDER BY job_id, started")
        by_job: dict[int, list[tuple[int, float, float]]] = defaultdict(list)
        for job_id, pid, started, ended in log:
            by_job[job_id].append((pid, started, ended))
        assert set(by_job) == {j.id for j in jobs}, "every job ran"
        for job_id, runs in by_job.items():
            for (_, _s1, e1), (_, s2, _e2) in itertools.pairwise(runs):
                assert s2 >= e1, f"job {job_id} had overlapping executions: {runs}"
        twice = {j: runs for j, runs in by_job.items() if len(runs) > 1}
        assert not twice, f"jobs executed more than once: {list(twice.items())[:5]}"
        pids = {pid for runs in by_job.values() for pid, _, _ in runs}
        assert len(pids) >= 2, "the work was shared between the nodes"
        assert _query(db_url, "SELECT count(*) FROM baton_producers") == [(0,)], "stopped nodes leave no producer rows"
    finally:
        _query(db_url, "DROP TABLE IF EXISTS exec_log")


# --------------------------------------------------------------------------- (c) graceful shutdown


async def test_sigterm_finishes_short_jobs_and_hands_long_ones_back(db_url, make_app):
    inserter = make_app()
    async with processes(["node", db_url, "--queues", "default:10", "--grace", "1"]) as (proc,):
        await proc.expect("READY")
        short = await inserter.insert_all([nodes.Sleep.new({"seconds": 0.3}) for _ in range(3)])
        long = await inserter.insert_all(
            [nodes.Sleep.new({"seconds": 30}), nodes.Sleep.new({"seconds": 30}), nodes.SyncSleep.new({"seconds": 30})]
        )
        ids = [j.id for j in short + long]

        async def all_executing() -> bool:
            return all(j.state == "executing" for j in await inserter.list_jobs(ids=ids))

        await wait_for(all_executing, 10)
        loop = asyncio.get_running_loop()
        sent = loop.time()
        proc.proc.send_signal(signal.SIGTERM)
        code, lines, err = await proc.rest(20)
        took = loop.time() - sent
        assert code == 0, err[-3000:]
        assert "STOPPED" in lines
    assert took < 8, f"a stop with shutdown_grace=1 took {took:.1f}s"

    for job in short:
        stored = await inserter.get_job(job.id)
        assert stored.state == "completed", f"short job {job.id} ended {stored.state}"
        assert stored.errors == []
    for job in long:
        stored = await inserter.get_job(job.id)
        assert stored.state == "available", f"long job {job.id} ended {stored.state}"
        assert stored.meta.get("rescued") == 1
        assert stored.attempt == 1
        assert stored.max_attempts > stored.attempt
        assert len(stored.errors) == 1
        assert "shut down" in stored.errors[0]["error"]
        assert stored.errors[0]["attempt"] == 1
    assert _query(db_url, "SELECT count(*) FROM baton_producers") == [(0,)], "producer rows are deleted"


async def test_stop_with_no_grace_hands_every_running_job_back(make_app):
    """The same, in process, through app.stop(): nothing is left `executing`."""
    app = make_app(queues={"default": 5}, shutdown_grace=0)
    app.register(nodes.Sleep)
    async with app:
        jobs = await app.insert_all([nodes.Sleep.new({"seconds": 30}) for _ in range(3)])

        async def executing() -> bool:
            return all(j.state == "executing" for j in await app.list_jobs(ids=[j.id for j in jobs]))

        await wait_for(executing, 10)
    for job in jobs:
        stored = await app.get_job(job.id)
        assert stored.state == "available"
        assert stored.meta["rescued"] == 1
        assert "shut down" in stored.errors[-1]["error"]


# --------------------------------------------------------------------------- a careless worker


async def test_a_worker_calling_sys_exit_does_not_kill_its_node(db_url, make_app):
    inserter = make_app()
    async with processes(["node", db_url, "--queues", "default:5", "--grace", "1"]) as (proc,):
        await proc.expect("READY")
        bad = await inserter.insert(nodes.Exits.new({}))

        async def attempted() -> bool:
            return (await inserter.get_job(bad.id)).attempt == 1

        await wait_for(attempted, 10)
        good = await inserter.insert(nodes.Sleep.new({"seconds": 0}))

        async def settled() -> bool:
            return (await inserter.get_job(good.id)).state == "completed" or proc.proc.returncode is not None

        with contextlib.suppress(AssertionError):
            await wait_for(settled, 5)
        assert proc.proc.returncode is None, "the node process died"
        assert (await inserter.get_job(good.id)).state == "completed"
        stored = await inserter.get_job(bad.id)
        assert stored.state == "retryable"
        assert "SystemExit" in stored.errors[0]["error"]
        proc.proc.send_signal(signal.SIGTERM)
        code, _, err = await proc.rest(20)
        assert code == 0, err[-3000:]
