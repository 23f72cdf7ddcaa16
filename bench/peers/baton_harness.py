"""Baton side of bench/compare.py (runs under Baton's own venv, /work/main/.venv).

    .venv/bin/python bench/peers/baton_harness.py insert   '{"url": "postgresql://...", "jobs": 20000}'
    .venv/bin/python bench/peers/baton_harness.py process  '{"url": ..., "jobs": 20000, "concurrency": 50, "nodes": 2}'
    .venv/bin/python bench/peers/baton_harness.py latency  '{"url": ..., "samples": 200, "warmup": 10}'
    .venv/bin/python bench/peers/baton_harness.py workflow '{"url": ..., "steps": 10000, "concurrency": 50}'
    .venv/bin/python bench/peers/baton_harness.py info     '{}'

Settings: `Baton(url, queues={"bench": C}, log_events=False)` with the default plugins (Stager,
Lifeline, WorkflowHealth) and the default pool; async no-op workers; bulk insert through one
`insert_all` call (the engine sends 5 000 rows per statement); single inserts with
`app.insert` from a separate, never-started app (wake-up through LISTEN/NOTIFY).
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

import baton

QUEUE = "bench"
NOOP = "bench.noop"
PROBE = "bench.probe"
UNFINISHED = ("available", "executing", "scheduled", "retryable", "suspended")
SETTINGS = [
    "Baton(url, queues={'bench': C}, log_events=False), default plugins (Stager, Lifeline, WorkflowHealth), "
    "default connection pool",
    "async no-op worker functions (run on the event loop)",
    "bulk insert: one app.insert_all(specs) call (the engine sends 5 000 rows per statement)",
    "single insert: app.insert(spec) from a second, never-started app; wake-up via LISTEN/NOTIFY",
]

_first = common.FirstJob()


def make_app(url: str, queues: dict[str, int] | None = None, kind: str = "async") -> baton.Baton:
    app = baton.Baton(url, queues=queues, log_events=False)
    if kind == "sync":

        @app.worker(name=NOOP, queue=QUEUE)
        def noop_sync(job: baton.Job) -> None:
            _first()

    else:

        @app.worker(name=NOOP, queue=QUEUE)
        async def noop(job: baton.Job) -> None:
            _first()

    @app.worker(name=PROBE, queue=QUEUE)
    async def probe(job: baton.Job) -> None:
        common.probe_started(job.args["n"])

    return app


# --------------------------------------------------------------------------- node


def node(cfg: dict[str, Any]) -> None:
    common.quiet_logging("baton", "psycopg", "psycopg.pool")
    app = make_app(cfg["url"], {QUEUE: int(cfg["concurrency"])}, cfg.get("kind", "async"))
    common.wait_for_go()
    asyncio.run(_run_node(app))


async def _run_node(app: baton.Baton) -> None:
    stop = common.stop_event_on_sigterm(asyncio.get_running_loop())
    try:
        async with app:
            await stop.wait()
    finally:
        await app.close()


# --------------------------------------------------------------------------- client


class BatonSystem:
    name = "baton"
    script = __file__

    def __init__(self, params: dict[str, Any]) -> None:
        self.url = params["url"]
        self.app: baton.Baton | None = None
        self.conn: psycopg.AsyncConnection[Any] | None = None

    async def setup(self) -> None:
        common.quiet_logging("baton", "psycopg", "psycopg.pool")
        self.app = make_app(self.url)
        await self.app.migrate()
        await self.app.count_jobs()  # open the pool outside the timings
        self.conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)

    async def bulk_insert(self, n: int) -> dict[str, float]:
        assert self.app is not None
        t0 = time.perf_counter()
        specs = [self.app.new(NOOP, {"n": i}) for i in range(n)]
        t1 = time.perf_counter()
        inserted = await self.app.insert_all(specs)
        t2 = time.perf_counter()
        if len(inserted) != n:
            raise RuntimeError(f"insert_all returned {len(inserted)} jobs for {n}")
        return {"seconds": t2 - t1, "build_seconds": t1 - t0}

    async def enqueue_probe(self, seq: int) -> None:
        assert self.app is not None
        await self.app.insert(self.app.new(PROBE, {"n": seq}))

    async def unfinished(self, nodes: Sequence[common.Node], expected: int) -> bool:
        assert self.conn is not None
        cur = await self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM baton_jobs WHERE state = ANY(%s))", [list(UNFINISHED)]
        )
        row = await cur.fetchone()
        return bool(row and row[0])

    async def finished_count(self, nodes: Sequence[common.Node], jobs: int) -> int:
        assert self.conn is not None
        cur = await self.conn.execute("SELECT count(*) FROM baton_jobs WHERE state = 'completed'")
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def analyze(self) -> None:
        assert self.conn is not None
        await self.conn.execute("ANALYZE")

    def node_config(self, concurrency: int, probe: bool) -> dict[str, Any]:
        return {"url": self.url, "concurrency": concurrency}

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None
        if self.app is not None:
            await self.app.close()
            self.app = None


class WorkflowSystem(BatonSystem):
    """Done = every step terminal and the workflow's completion row written (announced)."""

    workflow_id: str | None = None

    async def unfinished(self, nodes: Sequence[common.Node], expected: int) -> bool:
        assert self.conn is not None
        cur = await self.conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM workflow_completions WHERE workflow_id::text = %s)",
            [self.workflow_id],
        )
        row = await cur.fetchone()
        return bool(row and row[0])


# --------------------------------------------------------------------------- measurements


async def m_info(p: dict[str, Any]) -> dict[str, Any]:
    return {"versions": common.versions("baton", "psycopg", "psycopg-binary", "psycopg-pool"), "settings": SETTINGS}


async def m_workflow(p: dict[str, Any]) -> dict[str, Any]:
    """1 root -> (steps - 2) parallel steps -> 1 fan-in, all no-op; one node at `concurrency`.
    steps/s from `go` to the workflow's completion row."""
    steps = int(p["steps"])
    concurrency = int(p.get("concurrency", 50))
    system = WorkflowSystem(p)
    await system.setup()
    nodes: list[common.Node] = []
    try:
        app = system.app
        assert app is not None
        t0 = time.perf_counter()
        wf = baton.Workflow(label="bench-fan-out")
        wf.add("root", app.new(NOOP, {"n": 0}))
        fan = [f"s{i}" for i in range(steps - 2)]
        for i, name in enumerate(fan, 1):
            wf.add(name, app.new(NOOP, {"n": i}), deps=["root"])
        wf.add("join", app.new(NOOP, {"n": steps - 1}), deps=fan)
        t1 = time.perf_counter()
        system.workflow_id = str(await app.insert_workflow(wf))
        t2 = time.perf_counter()
        if p.get("analyze"):
            await system.analyze()
        nodes = await common.start_nodes(system, 1, concurrency)
        t3 = time.perf_counter()
        for n in nodes:
            n.go()
        if not await common.wait_done(system, nodes, steps, timeout=float(p.get("max_seconds", 900))):
            raise common.NodeError(f"the workflow did not finish within {p.get('max_seconds', 900)}s")
        seconds = time.perf_counter() - t3
        rss = [n.vmhwm_kib() for n in nodes]
        status = await app.workflow_status(system.workflow_id)
        if status.status != "completed":
            raise RuntimeError(f"workflow ended {status.status}: {status.counts}")
    finally:
        await common.stop_nodes(nodes)
        await system.close()
    return {
        "steps": steps,
        "concurrency": concurrency,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "build_seconds": t1 - t0,
        "insert_workflow_seconds": t2 - t1,
        "rss_kib": rss,
    }


if __name__ == "__main__":
    common.main({**common.measurements(BatonSystem, m_info), "workflow": m_workflow}, node)
