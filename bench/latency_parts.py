"""Baton's idle insert-to-start taken apart (issue #18): where the time between `app.insert` and
the job's first line goes on an idle PostgreSQL queue, beside the same job inserted by the same
statement on a plain psycopg connection and by a minimal insert-and-notify.

One node (a second process of this script, concurrency 10) runs a probe worker. The client
inserts one probe at a time, alternating three ways of inserting it, and after each waits for
the probe to start, 2 ms, and a random 0-`--gap` s (the probe loop of bench/compare.py):
  - app: `await app.insert(app.new(...))`, what a web request does;
  - statement: Baton's own `insert_job` statement, prepared, on a plain psycopg connection: the
    difference to `app` is the library's Python around the statement;
  - minimal: `INSERT INTO baton_jobs (queue, worker, args) ... RETURNING id` with `pg_notify`,
    the least that inserts a job Baton runs: the difference to `statement` is the statement.
The node stamps (`time.time()`, one clock for both processes) when its producer is woken by the
notification, when it sends the fetch, when the fetch returns, and the probe's first line.
A bare LISTEN/NOTIFY round trip, back to back and after idle gaps, is measured first.

Usage:
    .venv/bin/python bench/latency_parts.py                 # 300 probes of each kind
    .venv/bin/python bench/latency_parts.py --samples 1000
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import benchlib
import psycopg

import baton
from baton.engines.postgres.engine import PostgresEngine
from baton.store.jobs import _job_params as insert_job_params  # the parameters app.insert sends

QUEUE, WORKER = "bench", "bench.probe"
KINDS = ("app", "statement", "minimal")
INSERT_JOB = (Path(baton.__file__).parent / "engines" / "postgres" / "sql" / "insert_job.sql").read_text()
MINIMAL = (
    "WITH j AS (INSERT INTO baton_jobs (queue, worker, args) VALUES (%(queue)s, %(worker)s, %(args)s::jsonb)"
    " RETURNING queue) SELECT pg_notify(%(channel)s, j.queue) FROM j"
)
PARTS = (
    ("insert call", lambda r: r["returned"] - r["t0"]),
    ("insert start → node woken", lambda r: r["woken"] - r["t0"]),
    ("woken → fetch sent", lambda r: r["fetch_sent"] - r["woken"]),
    ("fetch call", lambda r: r["fetch_back"] - r["fetch_sent"]),
    ("fetch back → first line", lambda r: r["started"] - r["fetch_back"]),
    ("insert-to-start", lambda r: r["started"] - r["t0"]),
)


# --------------------------------------------------------------------------- node process


def node(url: str) -> None:
    """Run one node; print a JSON line per probe with the node's stamps."""
    from baton.runtime import producer
    from baton.store import transitions

    stamps: dict[str, float] = {}
    wake = producer.Producer.wake
    fetch_next = transitions.fetch_next

    def stamped_wake(self: producer.Producer) -> None:
        stamps.setdefault("woken", time.time())
        wake(self)

    async def stamped_fetch(*args: Any, **kwargs: Any) -> Any:
        sent = time.time()
        jobs, last = await fetch_next(*args, **kwargs)
        if jobs:
            stamps.update(fetch_sent=sent, fetch_back=time.time())
        return jobs, last

    producer.Producer.wake = stamped_wake  # type: ignore[method-assign]
    transitions.fetch_next = stamped_fetch  # type: ignore[assignment]

    app = baton.Baton(url, queues={QUEUE: 10}, log_events=False)

    @app.worker(name=WORKER, queue=QUEUE)
    async def probe(job: baton.Job) -> None:
        started = time.time()
        print(json.dumps({"n": job.args["n"], "started": started, **stamps}), flush=True)
        stamps.clear()

    async def run() -> None:
        async with app:
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    asyncio.run(run())


# --------------------------------------------------------------------------- client


async def measure(url: str, samples: int, gap: float) -> dict[str, list[dict[str, float]]]:
    app = baton.Baton(url, log_events=False)
    app.worker(name=WORKER, queue=QUEUE)(_noop)
    await app.count_jobs()  # open the pool outside the timings
    plain = await psycopg.AsyncConnection.connect(url, autocommit=True, options="-c jit=off")
    assert isinstance(app.engine, PostgresEngine)
    channel = app.engine.channel("insert")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "node",
        url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert proc.stdin is not None and proc.stdout is not None
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise SystemExit(f"the node did not start: {line!r}")
        await asyncio.sleep(1.0)  # LISTEN and the first fetch done
        warmup = 10
        for i in range((samples + warmup) * len(KINDS)):
            kind = KINDS[i % len(KINDS)]
            args = json.dumps({"n": i})
            t0 = time.time()
            if kind == "app":
                await app.insert(app.new(WORKER, {"n": i}))
            elif kind == "statement":
                params = insert_job_params(app.new(WORKER, {"n": i}), None, None, channel)
                await (await plain.execute(INSERT_JOB, params, prepare=True)).fetchall()
            else:
                params = {"queue": QUEUE, "worker": WORKER, "args": args, "channel": channel}
                await (await plain.execute(MINIMAL, params, prepare=True)).fetchall()
            returned = time.time()
            stamps = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
            if stamps["n"] != i:
                raise SystemExit(f"probe {stamps['n']} started while waiting for {i}")
            if i >= warmup * len(KINDS) and {"woken", "fetch_sent"} <= stamps.keys():
                runs[kind].append({"t0": t0, "returned": returned, **stamps})
            await asyncio.sleep(0.002 + random.uniform(0, gap))
    finally:
        proc.stdin.write(b"\n")
        await proc.stdin.drain()
        await asyncio.wait_for(proc.wait(), 30)
        await plain.close()
        await app.close()
    return runs


async def _noop(job: baton.Job) -> None:
    """The probe, as the inserting app knows it (it never runs jobs)."""


def report(runs: dict[str, list[dict[str, float]]], rtt: float, rtt_idle: float) -> str:
    header = ["p50 (p90), ms", *(f"{k} ({len(runs[k])})" for k in KINDS)]
    rows = []
    for name, part in PARTS:
        row = [name]
        for kind in KINDS:
            values = [part(r) for r in runs[kind]]
            row.append(f"{benchlib.percentile(values, 50) * 1000:.3f} ({benchlib.percentile(values, 90) * 1000:.3f})")
        rows.append(row)
    totals = {k: benchlib.percentile([r["started"] - r["t0"] for r in runs[k]], 50) for k in KINDS}
    return "\n".join(
        [
            benchlib.markdown_table(header, rows),
            "",
            f"Bare LISTEN/NOTIFY round trip: {rtt * 1000:.3f} ms back to back, {rtt_idle * 1000:.3f} ms after "
            "idle gaps; insert-to-start p50 as multiples of them: "
            + ", ".join(f"{k} {totals[k] / rtt:.1f}x / {totals[k] / rtt_idle:.1f}x" for k in KINDS),
        ]
    )


async def main(argv: Sequence[str] | None = None) -> int:
    parser = benchlib.argument_parser(__doc__)
    parser.add_argument("--samples", type=int, default=300, help="probes of each kind (%(default)s)")
    parser.add_argument("--gap", type=float, default=0.005, help="most random idle seconds between probes")
    args = parser.parse_args(argv)
    if benchlib.engine_of(args.url) != "postgres":
        raise SystemExit("latency_parts.py measures the LISTEN/NOTIFY path: give a PostgreSQL --url")
    benchlib.quiet()
    print(f"# Idle insert-to-start taken apart ({args.samples} probes of each kind)\n")
    benchlib.print_environment(await benchlib.describe(args.url))
    rtt = await benchlib.notify_rtt(args.url)
    rtt_idle = await benchlib.notify_rtt(args.url, gap=args.gap)
    async with benchlib.fresh_database(args.url) as url:
        runs = await measure(url, args.samples, args.gap)
    print(report(runs, rtt, rtt_idle))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "node":
        node(sys.argv[2])
    else:
        raise SystemExit(asyncio.run(main()))
