"""oban-py (PyPI `oban`, Oban for Python by oban-bg) side of bench/compare.py.

Runs under bench/.venvs/oban (Python 3.12: oban needs >= 3.12). Same argv/JSON protocol as
the other harnesses (see common.py).

Settings: pool from `Oban.create_pool(dsn)` (psycopg pool, defaults min 1 / max 10),
`Oban(pool=pool, queues={"bench": C})` with its default plugins (stager, lifeline, pruner,
refresher, leader), the telemetry logger not attached (it is opt-in), Python logging at
WARNING; async no-op `process`; bulk insert with `enqueue_many` in batches of 5 000; single
insert with `enqueue` from a client-mode instance (no queues; wake-up via the insert's
pg_notify).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import psycopg
from oban import Oban, worker
from oban.schema import install

QUEUE = "bench"
BATCH = 5_000
UNFINISHED = ("available", "executing", "scheduled", "retryable")
SETTINGS = [
    "pool: Oban.create_pool(dsn) (psycopg AsyncConnectionPool, default min 1 / max 10)",
    "Oban(pool=pool, queues={'bench': C}) with its default plugins; telemetry logger not attached "
    "(opt-in), logging at WARNING",
    "async no-op worker class (`async def process`)",
    f"bulk insert: oban.enqueue_many(...) in batches of {BATCH:,}",
    "single insert: oban.enqueue(job) from a client-mode Oban (no queues); wake-up via the insert's pg_notify",
    "processing runs are filled (untimed) with the same rows through oban's own insert_job.sql, pipelined "
    "(psycopg executemany), as enqueue_many costs one round trip per job",
]

_first = common.FirstJob()
_SYNC = {"on": False}  # a "sync" node: oban-py workers are async, so sync code goes to a thread


@worker(queue=QUEUE)
class Noop:
    async def process(self, job: Any) -> None:
        if _SYNC["on"]:
            await asyncio.to_thread(_first)
        else:
            _first()


@worker(queue=QUEUE)
class Probe:
    async def process(self, job: Any) -> None:
        common.probe_started(job.args["n"])


# --------------------------------------------------------------------------- node


def node(cfg: dict[str, Any]) -> None:
    common.quiet_logging("oban", "psycopg", "psycopg.pool")
    _SYNC["on"] = cfg.get("kind") == "sync"
    common.wait_for_go()
    asyncio.run(_run_node(cfg))


async def _run_node(cfg: dict[str, Any]) -> None:
    stop = common.stop_event_on_sigterm(asyncio.get_running_loop())
    pool = await Oban.create_pool(cfg["url"])
    try:
        async with Oban(pool=pool, queues={QUEUE: int(cfg["concurrency"])}):
            await stop.wait()
    finally:
        await pool.close()


# --------------------------------------------------------------------------- client


class ObanSystem:
    name = "oban"
    script = __file__

    def __init__(self, params: dict[str, Any]) -> None:
        self.url = params["url"]
        self.pool: Any = None
        self.oban: Oban | None = None
        self.poll: psycopg.AsyncConnection[Any] | None = None

    async def setup(self) -> None:
        common.quiet_logging("oban", "psycopg", "psycopg.pool")
        self.pool = await Oban.create_pool(self.url)
        await install(self.pool)
        self.oban = Oban(pool=self.pool)  # client mode: enqueue only
        async with self.pool.connection() as conn:  # warm a connection outside the timings
            await conn.execute("SELECT 1")
        self.poll = await psycopg.AsyncConnection.connect(self.url, autocommit=True)

    async def bulk_insert(self, n: int) -> dict[str, float]:
        assert self.oban is not None
        t0 = time.perf_counter()
        jobs = [Noop.new({"n": i}) for i in range(n)]
        t1 = time.perf_counter()
        inserted = 0
        for i in range(0, n, BATCH):
            inserted += len(await self.oban.enqueue_many(jobs[i : i + BATCH]))
        t2 = time.perf_counter()
        if inserted != n:
            raise RuntimeError(f"enqueue_many inserted {inserted} of {n}")
        return {"seconds": t2 - t1, "build_seconds": t1 - t0}

    async def seed(self, n: int) -> None:
        """The rows `enqueue_many` writes, through oban's own insert statement and argument
        casting, but pipelined (psycopg executemany) instead of one round trip per job."""
        from oban._query import INSERTABLE_FIELDS, Query

        stmt = Query._load_file("insert_job.sql", "public")
        rows = [
            {key: Query._cast_type(key, getattr(job, key)) for key in INSERTABLE_FIELDS}
            for job in (Noop.new({"n": i}) for i in range(n))
        ]
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(stmt, rows)

    async def enqueue_probe(self, seq: int) -> None:
        assert self.oban is not None
        await self.oban.enqueue(Probe.new({"n": seq}))

    async def unfinished(self, nodes: Sequence[common.Node], expected: int) -> bool:
        assert self.poll is not None
        cur = await self.poll.execute(
            "SELECT EXISTS (SELECT 1 FROM oban_jobs WHERE state::text = ANY(%s))", [list(UNFINISHED)]
        )
        row = await cur.fetchone()
        return bool(row and row[0])

    async def finished_count(self, nodes: Sequence[common.Node], jobs: int) -> int:
        assert self.poll is not None
        cur = await self.poll.execute("SELECT count(*) FROM oban_jobs WHERE state = 'completed'")
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def analyze(self) -> None:
        assert self.poll is not None
        await self.poll.execute("ANALYZE")

    def node_config(self, concurrency: int, probe: bool) -> dict[str, Any]:
        return {"url": self.url, "concurrency": concurrency}

    async def close(self) -> None:
        if self.poll is not None:
            await self.poll.close()
            self.poll = None
        if self.pool is not None:
            await self.pool.close()
            self.pool = None


async def m_info(p: dict[str, Any]) -> dict[str, Any]:
    return {"versions": common.versions("oban", "psycopg", "psycopg-binary", "psycopg-pool"), "settings": SETTINGS}


if __name__ == "__main__":
    common.main(common.measurements(ObanSystem, m_info), node)
