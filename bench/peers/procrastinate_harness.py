"""Procrastinate side of bench/compare.py (runs under bench/.venvs/procrastinate).

Settings: `PsycopgConnector` (psycopg 3 async pool; max_size raised to C + 2 so every
concurrent job can write its status without waiting for a connection: the default pool has
4 connections), `App.run_worker_async(concurrency=C, listen_notify=True, delete_jobs="never",
install_signal_handlers=False)`, async no-op tasks, Python logging at WARNING (Procrastinate
logs every job at INFO through the `procrastinate` logger). Bulk insert is
`task.batch_defer_async(*kwargs)` per 5 000 jobs (one `procrastinate_defer_jobs_v1` call);
single insert is `task.defer_async(...)` (wake-up via Procrastinate's NOTIFY trigger).
Procrastinate fetches one job per query (`procrastinate_fetch_job_v2`).
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
import procrastinate
import psycopg

QUEUE = "bench"
BATCH = 5_000
SETTINGS = [
    "PsycopgConnector with pool max_size = C + 2 (default pool: 4 connections); client pool default",
    "run_worker_async(queues=['bench'], concurrency=C, listen_notify=True, delete_jobs='never')",
    "async no-op tasks; logging at WARNING (logger `procrastinate`)",
    f"bulk insert: task.batch_defer_async(*kwargs) in batches of {BATCH:,}",
    "single insert: task.defer_async(n=...); wake-up via Procrastinate's NOTIFY trigger",
]

_first = common.FirstJob()


def make_app(url: str, pool_max: int | None = None, kind: str = "async") -> procrastinate.App:
    kwargs: dict[str, Any] = {"conninfo": url}
    if pool_max is not None:
        kwargs.update(min_size=min(4, pool_max), max_size=pool_max)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(**kwargs))

    if kind == "sync":

        @app.task(name="bench_noop", queue=QUEUE)
        def noop(n: int) -> None:  # procrastinate runs sync tasks in a thread
            _first()

    else:

        @app.task(name="bench_noop", queue=QUEUE)
        async def noop(n: int) -> None:  # type: ignore[misc]
            _first()

    @app.task(name="bench_probe", queue=QUEUE)
    async def probe(n: int) -> None:
        common.probe_started(n)

    app.bench_noop = noop  # type: ignore[attr-defined]
    app.bench_probe = probe  # type: ignore[attr-defined]
    return app


# --------------------------------------------------------------------------- node


def node(cfg: dict[str, Any]) -> None:
    common.quiet_logging("procrastinate", "psycopg", "psycopg.pool")
    concurrency = int(cfg["concurrency"])
    app = make_app(cfg["url"], pool_max=concurrency + 2, kind=cfg.get("kind", "async"))
    common.wait_for_go()
    asyncio.run(_run_node(app, concurrency))


async def _run_node(app: procrastinate.App, concurrency: int) -> None:
    loop = asyncio.get_running_loop()
    stop = common.stop_event_on_sigterm(loop)
    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(
                queues=[QUEUE],
                concurrency=concurrency,
                listen_notify=True,
                delete_jobs="never",
                install_signal_handlers=False,
                wait=True,
            )
        )
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({worker, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not worker.done():
            worker.cancel()
            try:
                await asyncio.wait_for(worker, 10)
            except (TimeoutError, asyncio.CancelledError):
                pass
        stopper.cancel()


# --------------------------------------------------------------------------- client


class ProcrastinateSystem:
    name = "procrastinate"
    script = __file__

    def __init__(self, params: dict[str, Any]) -> None:
        self.url = params["url"]
        self.app: procrastinate.App | None = None
        self._ctx: Any = None
        self.poll: psycopg.AsyncConnection[Any] | None = None

    async def setup(self) -> None:
        common.quiet_logging("procrastinate", "psycopg", "psycopg.pool")
        self.app = make_app(self.url)
        self._ctx = self.app.open_async()
        await self._ctx.__aenter__()
        await self.app.schema_manager.apply_schema_async()
        self.poll = await psycopg.AsyncConnection.connect(self.url, autocommit=True)

    async def bulk_insert(self, n: int) -> dict[str, float]:
        assert self.app is not None
        t0 = time.perf_counter()
        kwargs = [{"n": i} for i in range(n)]
        t1 = time.perf_counter()
        inserted = 0
        for i in range(0, n, BATCH):
            inserted += len(await self.app.bench_noop.batch_defer_async(*kwargs[i : i + BATCH]))  # type: ignore[attr-defined]
        t2 = time.perf_counter()
        if inserted != n:
            raise RuntimeError(f"batch_defer_async inserted {inserted} of {n}")
        return {"seconds": t2 - t1, "build_seconds": t1 - t0}

    async def enqueue_probe(self, seq: int) -> None:
        assert self.app is not None
        await self.app.bench_probe.defer_async(n=seq)  # type: ignore[attr-defined]

    async def unfinished(self, nodes: Sequence[common.Node], expected: int) -> bool:
        assert self.poll is not None
        cur = await self.poll.execute(
            "SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE status IN ('todo', 'doing'))"
        )
        row = await cur.fetchone()
        return bool(row and row[0])

    async def finished_count(self, nodes: Sequence[common.Node], jobs: int) -> int:
        assert self.poll is not None
        cur = await self.poll.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
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
        if self._ctx is not None:
            await self._ctx.__aexit__(None, None, None)
            self._ctx = None


async def m_info(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "versions": common.versions("procrastinate", "psycopg", "psycopg-binary", "psycopg-pool"),
        "settings": SETTINGS,
    }


if __name__ == "__main__":
    common.main(common.measurements(ProcrastinateSystem, m_info), node)
