"""Pooled PostgreSQL connections the server closed (a restart, pg_terminate_backend, an idle
timeout) are replaced when handed out, not given to the caller: the next call succeeds at its
first try, on the async and the sync pool, even in a process with more than FD_SETSIZE (1024)
open descriptors. Operations cancelled mid-statement give their connections back."""

from __future__ import annotations

import asyncio
import os
import resource
from typing import Any

import psycopg
import pytest

import baton
from baton.store import jobs as store
from pg import client_backends

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def pooled_pids(app: baton.Baton) -> list[int]:
    engine = app.engine
    pools = [engine._pool, engine._relaxed, engine._sync_pool]  # type: ignore[attr-defined]
    return [c.info.backend_pid for p in pools if p is not None for c in list(p._pool)]


@pytest.mark.parametrize("many_fds", [False, True], ids=["few-descriptors", "beyond-FD_SETSIZE"])
async def test_calls_after_the_server_closed_the_pooled_connections_succeed_first_time(pg_url, many_fds):
    held: list[int] = []
    if many_fds:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 2048:
            pytest.skip(f"the descriptor limit ({hard}) cannot go beyond FD_SETSIZE here")
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
        held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    app = baton.Baton(pg_url, plugins=[], log_events=False, pool_size=4)

    @app.worker(name="pool.w")
    def w(job: baton.Job) -> None:
        return None

    try:
        # Warm both pools up: several idle connections each.
        await asyncio.gather(*(app.insert_all([w.new({})] * 10) for _ in range(4)))
        await asyncio.gather(*(asyncio.to_thread(app.insert_all_sync, [w.new({})] * 10) for _ in range(2)))
        pids = pooled_pids(app)
        assert len(pids) >= 3
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])
        await asyncio.sleep(0.2)  # the FATAL message and the end of stream reach the sockets

        job = await app.insert(w.new({"after": "terminate"}))
        job_sync = app.insert_sync(w.new({"after": "terminate"}))
        assert {j.id for j in await app.list_jobs(ids=[job.id, job_sync.id])} == {job.id, job_sync.id}
        # The relaxed pool (fetches) too: a statement on it works at the first try.
        assert await app.engine.run_relaxed(store.executing_ids, "no-such-producer") == []
    finally:
        await app.close()
        for fd in held:
            os.close(fd)


async def test_a_pool_whose_every_idle_connection_died_serves_the_next_call_at_once(pg_url):
    """After a restart every idle connection is dead. psycopg_pool's own check waits 1 s, 2 s,
    4 s... after each connection that fails it, so a full pool made the next call time out
    although the server was up (an insert after a restart, with eight idle connections: 10 s).
    The dead ones are dropped at once and the pool connects anew, on both pools."""
    app = baton.Baton(pg_url, plugins=[], log_events=False, pool_size=8)
    app.engine.connect_timeout = 3.0  # type: ignore[attr-defined]  # the pools' wait for a connection

    @app.worker(name="pool.full")
    def w(job: baton.Job) -> None:
        return None

    try:
        await app.count_jobs()  # opens the async pools
        engine: Any = app.engine
        pool, sync_pool = engine._pool, engine._sync()
        held = [await pool.getconn() for _ in range(pool.max_size)]
        for conn in held:
            await pool.putconn(conn)
        held_sync = [sync_pool.getconn() for _ in range(sync_pool.max_size)]
        for conn in held_sync:
            sync_pool.putconn(conn)
        pids = [c.info.backend_pid for c in list(pool._pool) + list(sync_pool._pool)]
        assert len(pids) == pool.max_size + sync_pool.max_size == 12
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])
        await asyncio.sleep(0.2)  # the FATAL message and the end of stream reach the sockets

        job = await app.insert(w.new({"after": "terminate"}))
        job_sync = await asyncio.to_thread(app.insert_sync, w.new({"after": "terminate"}))
        assert {j.id for j in await app.list_jobs(ids=[job.id, job_sync.id])} == {job.id, job_sync.id}
    finally:
        await app.close()


async def test_operations_cancelled_mid_statement_give_their_connections_back(pg_url):
    """An operation cancelled while its statement runs (a request timing out) hands the pooled
    connection back; the pool drops it instead of lending it out mid-statement, so a burst of
    cancellations larger than the pool neither depletes it nor breaks the next call."""
    app = baton.Baton(pg_url, plugins=[], log_events=False, pool_size=2)
    w = app.worker(name="pool.cancelled", unique={"period": 60})(_noop)
    spec = w.new({"n": 1}, unique=True)
    key = f"u:{spec.unique_key()}"
    try:
        await app.count_jobs()
        with psycopg.connect(pg_url, autocommit=True) as holder:
            # The insert of a unique job waits for this key's advisory lock (lock_keys).
            holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [key])
            for _ in range(5):
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(app.insert(spec), 0.2)
            holder.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [key])
        job = await asyncio.wait_for(app.insert(spec), 10)
        assert not job.conflict and job.state == "available"
        pool = app.engine._pool  # type: ignore[attr-defined]
        idle = list(pool._pool)
        assert idle and all(c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE for c in idle)
    finally:
        await app.close()


async def test_concurrent_first_calls_open_the_pools_once(pg_url, monkeypatch):
    """The first calls of a fresh app often come together (requests arriving at once): they
    share one opening of the pools instead of each opening pools of its own (six calls made
    24 connections and left the pools of all but the last to the garbage collector), and
    closing the app closes every connection it made."""
    connects = 0
    connect = psycopg.AsyncConnection.connect.__func__  # type: ignore[attr-defined]

    async def counted(cls: type[psycopg.AsyncConnection[Any]], *args: Any, **kwargs: Any) -> Any:
        nonlocal connects
        connects += 1
        return await connect(cls, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", classmethod(counted))
    app = baton.Baton(pg_url, plugins=[], log_events=False, pool_size=2)
    before = client_backends(pg_url)
    try:
        counts = await asyncio.gather(*(app.count_jobs() for _ in range(6)))
        assert all(isinstance(c, dict) for c in counts)
        # The probe, the main pool's two connections and the relaxed pool's one.
        assert connects == 4
    finally:
        await app.close()
    assert client_backends(pg_url) == before


async def _noop(job: baton.Job) -> None:
    pass
