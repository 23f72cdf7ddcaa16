"""Programs for the multi-process tests (tests/test_multinode.py), run as real processes:

    python tests/nodes.py node   URL [--queues default:10] [--grace 15]
    python tests/nodes.py unique URL BARRIER_FILE COUNT

`node` starts a Baton node on URL, prints READY once started, and stops gracefully on SIGTERM
(printing STOPPED). `unique` prints READY, waits for BARRIER_FILE to exist, inserts the same
unique jobs COUNT times as fast as it can, and prints a JSON summary.

The workers are module-level class workers with fixed names, so the test process (which
imports this module) and the node processes (which run it as __main__) agree on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg_pool

import baton

EXEC_LOG_DDL = "CREATE TABLE exec_log (job_id bigint, pid int, started double precision, ended double precision)"


def app(url: str | None = None, **options: Any) -> baton.Baton:
    """The app factory: the URL comes from the argument, else $BATON_DATABASE_URL."""
    url = url or os.environ["BATON_DATABASE_URL"]
    options.setdefault("plugins", [])
    options.setdefault("log_events", False)
    instance = baton.Baton(url, **options)
    instance.register(Record, Sleep, SyncSleep, Exits, UniqueJob)
    return instance


# --------------------------------------------------------------------------- side table


_local = threading.local()
_pool: Any = None
_pool_lock = threading.Lock()


def _exec_log_pool(url: str) -> Any:
    """PostgreSQL: a few connections shared by the process's worker threads (one per thread
    would take 50 of a default server's 100 connections per node)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            # The log is evidence, not state: skip the fsync wait so it does not slow the nodes down.
            _pool = psycopg_pool.ConnectionPool(
                url, min_size=1, max_size=4, kwargs={"autocommit": True, "options": "-c synchronous_commit=off"}
            )
        return _pool


def _exec_log_conn() -> Any:
    """SQLite: one connection per worker thread to the database named by $BATON_DATABASE_URL."""
    conn = getattr(_local, "conn", None)
    if conn is None:
        url = os.environ["BATON_DATABASE_URL"]
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA synchronous = NORMAL")
        _local.conn = conn
    return conn


def record_execution(job_id: int, started: float, ended: float) -> None:
    params = (job_id, os.getpid(), started, ended)
    url = os.environ["BATON_DATABASE_URL"]
    if url.startswith("postgres"):
        with _exec_log_pool(url).connection() as conn:
            conn.execute("INSERT INTO exec_log VALUES (%s, %s, %s, %s)", params)
        return
    _exec_log_conn().execute("INSERT INTO exec_log VALUES (?, ?, ?, ?)", params)


# --------------------------------------------------------------------------- workers


class Record(baton.Worker):
    """Records every execution (job id, pid, start and end time) in the exec_log table."""

    name = "nodes.Record"
    max_attempts = 3

    def perform(self, job: baton.Job) -> None:
        started = time.time()
        time.sleep(job.args.get("sleep", 0))
        record_execution(job.id, started, time.time())


class Sleep(baton.Worker):
    """Sleeps `seconds` on the event loop."""

    name = "nodes.Sleep"

    async def perform(self, job: baton.Job) -> None:
        await asyncio.sleep(job.args["seconds"])


class SyncSleep(baton.Worker):
    """Sleeps `seconds` in a worker thread."""

    name = "nodes.SyncSleep"

    def perform(self, job: baton.Job) -> None:
        time.sleep(job.args["seconds"])


class Exits(baton.Worker):
    """Calls sys.exit() from a worker thread, as a careless script-like job would."""

    name = "nodes.Exits"
    max_attempts = 2

    def perform(self, job: baton.Job) -> None:
        sys.exit(3)


class UniqueJob(baton.Worker):
    """Unique forever on its args."""

    name = "nodes.UniqueJob"
    unique = {"period": None}

    def perform(self, job: baton.Job) -> None:
        return None


# --------------------------------------------------------------------------- programs


def _say(line: str) -> None:
    print(line, flush=True)


async def run_node(url: str, queues: dict[str, int], grace: float, lifetime: float) -> None:
    node = app(url, queues=queues, shutdown_grace=grace, poll_interval=0.2)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with node:
        _say("READY")
        try:
            await asyncio.wait_for(stop.wait(), lifetime)
        except TimeoutError:
            _say("LIFETIME")
    _say("STOPPED")


async def run_unique(url: str, barrier: str, count: int, concurrency: int = 4) -> None:
    inserter = app(url)
    await inserter.count_jobs()  # connect before the race starts
    _say("READY")
    while not Path(barrier).exists():
        await asyncio.sleep(0.001)
    inserted: list[int] = []
    conflicts = 0

    def tally(jobs: list[baton.Job]) -> None:
        nonlocal conflicts
        for job in jobs:
            if job.conflict:
                conflicts += 1
            else:
                inserted.append(job.id)

    async def lane(start: int) -> None:
        for _ in range(start, count, concurrency):
            tally([await inserter.insert(UniqueJob.new({"k": "same"}))])

    # The same unique job `count` times from `concurrency` lanes, then one bulk insert of
    # fifty other unique jobs (which the other process inserts at the same time).
    await asyncio.gather(*(lane(n) for n in range(concurrency)))
    tally(await inserter.insert_all([UniqueJob.new({"k": i}) for i in range(50)]))
    await inserter.close()
    _say(json.dumps({"pid": os.getpid(), "inserted": inserted, "conflicts": conflicts}))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="nodes.py")
    sub = parser.add_subparsers(dest="mode", required=True)
    node = sub.add_parser("node")
    node.add_argument("url")
    node.add_argument("--queues", default="default:10")
    node.add_argument("--grace", type=float, default=15.0)
    node.add_argument("--lifetime", type=float, default=120.0)
    unique = sub.add_parser("unique")
    unique.add_argument("url")
    unique.add_argument("barrier")
    unique.add_argument("count", type=int)
    args = parser.parse_args(argv)
    os.environ["BATON_DATABASE_URL"] = args.url
    if args.mode == "node":
        queues = {name: int(limit) for name, _, limit in (q.partition(":") for q in args.queues.split(","))}
        asyncio.run(run_node(args.url, queues, args.grace, args.lifetime))
    else:
        asyncio.run(run_unique(args.url, args.barrier, args.count))


if __name__ == "__main__":
    main(sys.argv[1:])
