"""The floor of idle insert-to-start latency, for bench/compare.py (runs in Baton's venv).

Not a job queue: the least a PostgreSQL queue woken by LISTEN/NOTIFY can do for one job, with
plain psycopg, measured by the same probe loop as the systems (`common.measure_latency`, a
separate node process). The client inserts one row and notifies in one autocommit statement
(the durable commit every queue pays); the node LISTENs on a dedicated connection and, on each
notification, claims the oldest available row with one `UPDATE ... WHERE id = (SELECT ... FOR
UPDATE SKIP LOCKED) RETURNING` on a second connection (not waiting for its WAL flush, as
Baton's fetch does not), then runs the probe and marks it done.
No retries, no attempts, no pool, no telemetry: whatever a queue's latency has above this
figure is the queue's own work; this figure above the NOTIFY round trip is the machine's.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import psycopg

CHANNEL = "bare_bench"
SETTINGS = [
    "not a queue: plain psycopg, the least work a LISTEN/NOTIFY queue does for one job",
    "insert: one autocommit `WITH j AS (INSERT ... RETURNING id) SELECT pg_notify(...)` statement",
    "node: LISTEN on a dedicated connection; per notification one claiming "
    "`UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING` on a second connection "
    "(synchronous_commit off, as a lost claim leaves the row available)",
]
SCHEMA = """
CREATE TABLE IF NOT EXISTS bare_jobs (
    id bigserial PRIMARY KEY,
    state text NOT NULL DEFAULT 'available',
    args jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS bare_jobs_available ON bare_jobs (id) WHERE state = 'available'
"""
INSERT = f"WITH j AS (INSERT INTO bare_jobs (args) VALUES (%s) RETURNING id) SELECT pg_notify('{CHANNEL}', '') FROM j"
CLAIM = (
    "UPDATE bare_jobs SET state = 'executing' WHERE id = ("
    "SELECT id FROM bare_jobs WHERE state = 'available' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
    ") RETURNING id, args"
)


def node(cfg: dict[str, Any]) -> None:
    common.wait_for_go()
    asyncio.run(_run_node(cfg["url"]))


async def _run_node(url: str) -> None:
    stop = common.stop_event_on_sigterm(asyncio.get_running_loop())
    listener = await psycopg.AsyncConnection.connect(url, autocommit=True)
    # A lost claim is harmless (the row stays available), so like a queue's fetch it need not
    # wait for its WAL flush.
    worker = await psycopg.AsyncConnection.connect(url, autocommit=True, options="-c synchronous_commit=off")
    await listener.execute(f"LISTEN {CHANNEL}")

    async def consume() -> None:
        async for _ in listener.notifies():
            while True:  # claim until nothing is left, as a queue would after a wake-up
                cur = await worker.execute(CLAIM, prepare=True)
                row = await cur.fetchone()
                if row is None:
                    break
                common.probe_started(row[1]["n"])
                await worker.execute("UPDATE bare_jobs SET state = 'completed' WHERE id = %s", [row[0]], prepare=True)

    task = asyncio.create_task(consume())
    await stop.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await listener.close()
    await worker.close()


class BareSystem:
    name = "bare"
    script = __file__

    def __init__(self, params: dict[str, Any]) -> None:
        self.url = params["url"]
        self.conn: psycopg.AsyncConnection[Any] | None = None

    async def setup(self) -> None:
        self.conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        await self.conn.execute(SCHEMA)

    async def enqueue_probe(self, seq: int) -> None:
        assert self.conn is not None
        await self.conn.execute(INSERT, [psycopg.types.json.Jsonb({"n": seq})], prepare=True)

    async def unfinished(self, nodes: Sequence[common.Node], expected: int) -> bool:
        assert self.conn is not None
        cur = await self.conn.execute("SELECT EXISTS (SELECT 1 FROM bare_jobs WHERE state <> 'completed')")
        row = await cur.fetchone()
        return bool(row and row[0])

    def node_config(self, concurrency: int, probe: bool) -> dict[str, Any]:
        return {"url": self.url}

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


async def m_info(p: dict[str, Any]) -> dict[str, Any]:
    return {"versions": common.versions("psycopg", "psycopg-binary"), "settings": SETTINGS}


async def m_latency(p: dict[str, Any]) -> dict[str, Any]:
    return await common.measure_latency(BareSystem(p), int(p["samples"]), int(p.get("warmup", 10)))


if __name__ == "__main__":
    common.main({"info": m_info, "latency": m_latency}, node)
