"""A worker node of the partition scenario (tests/faults/partition_scenario.py), run as a subprocess:

    python tests/faults/partition_node.py URL --side SIDE_URL --node NAME [--limit N] [--paused]
                                          [--no-lease-guard]

It runs queue `default` (`--limit`, default 20; `--paused` starts it paused, to be resumed
with `app.resume_queue("default", node=NAME)`) with refresh_interval=0.5, stale_after=2 and
Lifeline(rescue_interval=1), prints `ready NAME` once started and runs until SIGTERM.

URL may lead through a TCP proxy the scenario freezes (PostgreSQL), or name an SQLite file
whose write lock the scenario holds; SIDE_URL (PostgreSQL, or a separate SQLite file) is
reached directly: it is "the world outside the database", where jobs write their side effects.
Two workers, `partition.async` and `partition.sync`, record `start`, sleep `args.sleep`
seconds (the sync one polling `job.raise_if_cancelled()` every 50 ms), then write their side
effect: one `effect` row in `partition_effects(job_id, attempt, node, phase, at)`. The node's
("baton","node","lease_lost" | "lease_regained") and ("baton","job","fenced") events go to
`partition_events(kind, node, detail, at)`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

SRC = Path(__file__).resolve().parents[2] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

import baton  # noqa: E402
from baton.plugins import Lifeline  # noqa: E402

REFRESH_INTERVAL = 0.5
STALE_AFTER = 2.0
RESCUE_INTERVAL = 1.0

SIDE_TABLES = (
    "CREATE TABLE IF NOT EXISTS partition_effects "
    "(job_id bigint, attempt integer, node text, phase text, at double precision)",
    "CREATE TABLE IF NOT EXISTS partition_events (kind text, node text, detail text, at double precision)",
)


def create_side_tables(side_url: str) -> None:
    for statement in SIDE_TABLES:
        side_write(side_url, statement, ())


def side_write(side_url: str, statement: str, params: tuple[Any, ...]) -> None:
    """One statement on the side store, on a new connection (%s placeholders)."""
    if side_url.startswith("sqlite"):
        conn = sqlite3.connect(side_url.split(":///", 1)[1], timeout=30, isolation_level=None)
        try:
            conn.execute(statement.replace("%s", "?"), params)
        finally:
            conn.close()
        return
    with psycopg.connect(side_url, autocommit=True) as pg:
        pg.execute(statement, params)  # type: ignore[arg-type]


def build(url: str, side_url: str, node: str, limit: int, paused: bool, lease_guard: bool) -> baton.Baton:
    app = baton.Baton(
        url,
        queues={"default": {"limit": limit, "paused": paused}},
        node=node,
        refresh_interval=REFRESH_INTERVAL,
        stale_after=STALE_AFTER,
        shutdown_grace=1,
        plugins=[Lifeline(rescue_interval=RESCUE_INTERVAL)],
        log_events=False,
        lease_guard=lease_guard,
    )

    def record(job: baton.Job, phase: str) -> None:
        row = (job.id, job.attempt, node, phase, time.time())
        side_write(side_url, "INSERT INTO partition_effects VALUES (%s, %s, %s, %s, %s)", row)

    async def arecord(job: baton.Job, phase: str) -> None:
        await asyncio.to_thread(record, job, phase)

    @app.worker(name="partition.async")
    async def work_async(job: baton.Job) -> int:
        await arecord(job, "start")
        await asyncio.sleep(float(job.args["sleep"]))
        await arecord(job, "effect")
        return job.id

    @app.worker(name="partition.sync")
    def work_sync(job: baton.Job) -> int:
        record(job, "start")
        until = time.monotonic() + float(job.args["sleep"])
        while time.monotonic() < until:
            job.raise_if_cancelled()
            time.sleep(0.05)
        job.raise_if_cancelled()
        record(job, "effect")
        return job.id

    def on_event(event: tuple[str, ...], measurements: Any, meta: Any) -> None:
        detail = {**dict(measurements), **{k: v for k, v in dict(meta).items() if k != "job"}}
        if event[-1] == "fenced":
            detail["job_id"] = meta["job"].id if "job" in meta else meta.get("job_id")
        row = (event[-1], node, json.dumps(detail, default=str), time.time())

        def write() -> None:
            side_write(side_url, "INSERT INTO partition_events VALUES (%s, %s, %s, %s)", row)

        threading.Thread(target=write, daemon=True).start()

    baton.telemetry.attach_many(
        f"partition-{node}",
        [("baton", "node", "lease_lost"), ("baton", "node", "lease_regained"), ("baton", "job", "fenced")],
        on_event,
    )
    return app


async def run(args: argparse.Namespace) -> None:
    app = build(args.url, args.side, args.node, args.limit, args.paused, not args.no_lease_guard)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with app:
        print(f"ready {args.node}", flush=True)
        await stop.wait()
    print(f"stopped {args.node}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--side", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--paused", action="store_true")
    parser.add_argument("--no-lease-guard", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
