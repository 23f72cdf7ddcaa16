"""PgQueuer side of bench/compare.py (runs under bench/.venvs/pgqueuer).

Settings: the asyncpg driver (`AsyncpgDriver` on one connection, as PgQueuer's own benchmark
tool uses), durable (logged) tables as installed by default, Python logging at WARNING
(PgQueuer logs through the `pgqueuer` logger), async no-op entrypoints. Concurrency C maps to
`run(batch_size=C)`: PgQueuer dequeues C jobs per query and runs every picked job at once
(no `max_concurrent_tasks` cap, its default; a cap must be >= 2 x batch_size). Bulk insert is
one `queries.enqueue(list_of_entrypoints, list_of_payloads, list_of_priorities)` call per 5 000
jobs; single insert is `queries.enqueue(entrypoint, payload)` (wake-up via PgQueuer's NOTIFY
trigger). A job counts as finished when its row has left the `pgqueuer` table (PgQueuer moves
finished jobs to `pgqueuer_log` in buffered batches).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg
import common
from pgqueuer import AsyncpgDriver, PgQueuer, Queries
from pgqueuer.models import Job

NOOP = "bench_noop"
PROBE = "bench_probe"
BATCH = 5_000
SETTINGS = [
    "driver: AsyncpgDriver (one asyncpg connection per process), durable tables (default install)",
    "node: PgQueuer(driver) with async entrypoints, run(batch_size=C); no max_concurrent_tasks cap (default)",
    f"bulk insert: queries.enqueue([entrypoints], [payloads], [priorities]) in batches of {BATCH:,}",
    "single insert: queries.enqueue(entrypoint, payload); wake-up via PgQueuer's NOTIFY trigger",
    "logging at WARNING (logger `pgqueuer`)",
]

_first = common.FirstJob()


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


# --------------------------------------------------------------------------- node


def node(cfg: dict[str, Any]) -> None:
    common.quiet_logging("pgqueuer", "asyncpg")
    common.wait_for_go()
    asyncio.run(_run_node(cfg))


async def _run_node(cfg: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    stop = common.stop_event_on_sigterm(loop)
    conn = await asyncpg.connect(_dsn(cfg["url"]))
    pgq = PgQueuer(AsyncpgDriver(conn))

    if cfg.get("kind") == "sync":

        @pgq.entrypoint(NOOP)
        async def noop_sync(job: Job) -> None:
            # PgQueuer dropped sync entrypoints; its documented way is asyncio.to_thread.
            await asyncio.to_thread(_first)

    else:

        @pgq.entrypoint(NOOP)
        async def noop(job: Job) -> None:
            _first()

    @pgq.entrypoint(PROBE)
    async def probe(job: Job) -> None:
        common.probe_started(int(job.payload or b"0"))

    async def stopper() -> None:
        await stop.wait()
        pgq.shutdown.set()

    task = asyncio.create_task(stopper())
    try:
        await pgq.run(batch_size=int(cfg["concurrency"]))
    finally:
        task.cancel()
        await conn.close()


# --------------------------------------------------------------------------- client


class PgQueuerSystem:
    name = "pgqueuer"
    script = __file__

    def __init__(self, params: dict[str, Any]) -> None:
        self.url = _dsn(params["url"])
        self.conn: asyncpg.Connection | None = None
        self.queries: Queries | None = None

    async def setup(self) -> None:
        common.quiet_logging("pgqueuer", "asyncpg")
        self.conn = await asyncpg.connect(self.url)
        self.queries = Queries(AsyncpgDriver(self.conn))
        await self.queries.install()
        await self.conn.execute("SELECT 1")

    async def bulk_insert(self, n: int) -> dict[str, float]:
        assert self.queries is not None
        t0 = time.perf_counter()
        entrypoints = [NOOP] * n
        payloads = [str(i).encode() for i in range(n)]
        priorities = [0] * n
        t1 = time.perf_counter()
        inserted = 0
        for i in range(0, n, BATCH):
            ids = await self.queries.enqueue(
                entrypoints[i : i + BATCH], payloads[i : i + BATCH], priorities[i : i + BATCH]
            )
            inserted += len(ids)
        t2 = time.perf_counter()
        if inserted != n:
            raise RuntimeError(f"enqueue inserted {inserted} of {n}")
        return {"seconds": t2 - t1, "build_seconds": t1 - t0}

    async def enqueue_probe(self, seq: int) -> None:
        assert self.queries is not None
        await self.queries.enqueue(PROBE, str(seq).encode())

    async def unfinished(self, nodes: Sequence[common.Node], expected: int) -> bool:
        assert self.conn is not None
        return bool(await self.conn.fetchval("SELECT EXISTS (SELECT 1 FROM pgqueuer)"))

    async def finished_count(self, nodes: Sequence[common.Node], jobs: int) -> int:
        assert self.conn is not None
        return jobs - int(await self.conn.fetchval("SELECT count(*) FROM pgqueuer"))

    async def analyze(self) -> None:
        assert self.conn is not None
        await self.conn.execute("ANALYZE")

    def node_config(self, concurrency: int, probe: bool) -> dict[str, Any]:
        return {"url": self.url, "concurrency": concurrency}

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None


async def m_info(p: dict[str, Any]) -> dict[str, Any]:
    return {"versions": common.versions("pgqueuer", "asyncpg"), "settings": SETTINGS}


if __name__ == "__main__":
    common.main(common.measurements(PgQueuerSystem, m_info), node)
