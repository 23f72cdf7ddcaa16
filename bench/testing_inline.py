"""What inline mode costs per insert: insert + in-process run + re-read of one job, and of a
4-step workflow, on SQLite and PostgreSQL.

    python bench/testing_inline.py [--pg postgresql://postgres@127.0.0.1:5432/postgres] [--n 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

import baton
from baton import testing


async def measure(url: str, n: int) -> tuple[float, float]:
    app = baton.Baton(url, plugins=[], log_events=False)
    await app.migrate()

    @app.worker
    def noop(job: baton.Job) -> None:
        return None

    jobs, flows = [], []
    with testing.inline(app):
        for _ in range(n):
            started = time.perf_counter()
            await app.insert(noop.new({}))
            jobs.append(time.perf_counter() - started)
        for _ in range(max(1, n // 10)):
            wf = baton.Workflow(label="bench")
            wf.add("a", noop.new({}))
            wf.add("b", noop.new({}), deps=["a"])
            wf.add("c", noop.new({}), deps=["a"])
            wf.add("d", noop.new({}), deps=["b", "c"])
            started = time.perf_counter()
            await app.insert_workflow(wf)
            flows.append(time.perf_counter() - started)
    await app.close()
    return statistics.median(jobs) * 1000, statistics.median(flows) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        job_ms, wf_ms = asyncio.run(measure(f"sqlite:///{Path(tmp) / 'bench.db'}", args.n))
    print(f"sqlite:   inline insert of one job p50 {job_ms:.2f} ms, of a 4-step workflow p50 {wf_ms:.2f} ms")
    name = f"baton_inline_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = args.pg.rsplit("/", 1)[0] + "/" + name
        job_ms, wf_ms = asyncio.run(measure(url, args.n))
        print(f"postgres: inline insert of one job p50 {job_ms:.2f} ms, of a 4-step workflow p50 {wf_ms:.2f} ms")
    finally:
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    sys.stdout.flush()


if __name__ == "__main__":
    main()
