"""What PostgreSQL spends on Baton's hot path (issue #18): the server CPU per job of the fetch
and the ack statements as the package ships them, and what each index that these two
statements write costs, measured by dropping it in a scratch database.

Every state change of a job is a non-HOT update (the state is in the indexes' keys and
predicates), so each one writes a new heap tuple, its WAL, a primary-key entry and an entry in
every index whose predicate the new state matches: the fetch (available -> executing) writes
the executing index and the full (queue, state, id) index of the dashboard, the ack (executing
-> completed) the completed index and (queue, state, id) again.

Per variant, in a fresh database: `--jobs` available jobs inserted with `app.insert_all`, then
one connection (or `--fetchers` connections at once) repeats `fetch_jobs` of `--batch` jobs
and `complete_jobs` of the same jobs. Reported: the wall time of each statement from the
client (one connection: server time plus a round trip), the CPU time of the backends that ran
them (`/proc/<pid>/stat`), and the WAL that one fetch and one ack write (EXPLAIN (ANALYZE,
WAL)). Statements run with synchronous_commit off: the figure is CPU, not the WAL flush an
ack waits for. Variants alternate, `--repeat` times each; the table shows medians.

Usage:
    .venv/bin/python bench/hot_path.py                  # ~2 min
    .venv/bin/python bench/hot_path.py --repeat 5 --out bench/results/hot-path-latest.md
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import psycopg

import baton

SQL = Path(baton.__file__).parent / "engines" / "postgres" / "sql"
FETCH = (SQL / "fetch_jobs.sql").read_text()
ACK = (SQL / "complete_jobs.sql").read_text()
QUEUE, WORKER = "bench", "bench.noop"
WARMUP = 20  # batches per connection before the clock starts

# (label, indexes dropped, concurrent fetchers)
VARIANTS: list[tuple[str, tuple[str, ...], int]] = [
    ("as shipped", (), 1),
    ("without (queue, state, id)", ("baton_jobs_queue_idx",), 1),
    ("without the executing index", ("baton_jobs_executing_idx",), 1),
    ("without the completed index", ("baton_jobs_completed_idx",), 1),
    (
        "without all three",
        ("baton_jobs_queue_idx", "baton_jobs_executing_idx", "baton_jobs_completed_idx"),
        1,
    ),
]


@dataclass
class Run:
    fetch_ms: list[float] = field(default_factory=list)
    ack_ms: list[float] = field(default_factory=list)
    cpu_us_per_job: float = 0.0
    wal_fetch: float = 0.0  # bytes per job
    wal_ack: float = 0.0


def _array(values: list[Any]) -> str:
    return "{" + ",".join(str(v) for v in values) + "}"


async def _connect(url: str) -> tuple[psycopg.AsyncConnection[Any], int]:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, options="-c synchronous_commit=off")
    cur = await conn.execute("SELECT pg_backend_pid()")
    row = await cur.fetchone()
    assert row is not None
    return conn, int(row[0])


async def _cycle(conn: psycopg.AsyncConnection[Any], producer: str, batch: int, run: Run | None) -> int:
    """One fetch of `batch` jobs and the ack of what it fetched; the number of jobs."""
    params = {"queue": QUEUE, "node": "bench", "uuid": producer, "limit": batch, "channel": "baton_workflow"}
    t0 = time.perf_counter()
    cur = await conn.execute(FETCH, params, prepare=True)
    rows = await cur.fetchall()
    t1 = time.perf_counter()
    if not rows:
        return 0
    ids = [r[0] for r in rows]
    attempts = [r[7] for r in rows]
    await conn.execute(
        ACK, {"ids": _array(ids), "attempts": _array(attempts), "uuids": _array([producer] * len(ids))}, prepare=True
    )
    t2 = time.perf_counter()
    if run is not None:
        run.fetch_ms.append((t1 - t0) * 1000)
        run.ack_ms.append((t2 - t1) * 1000)
    return len(rows)


async def _wal(conn: psycopg.AsyncConnection[Any], producer: str, batch: int) -> tuple[float, float]:
    """WAL bytes per job of one fetch and of its ack (EXPLAIN (ANALYZE, WAL) runs them)."""

    async def explain(query: str, params: dict[str, Any]) -> tuple[int, int]:
        cur = await conn.execute("EXPLAIN (ANALYZE, WAL, FORMAT JSON) " + query, params)
        row = await cur.fetchone()
        assert row is not None
        plan = row[0][0]["Plan"]
        return int(plan.get("WAL Bytes", 0)), int(plan.get("Actual Rows", 0))

    params = {"queue": QUEUE, "node": "bench", "uuid": producer, "limit": batch, "channel": "baton_workflow"}
    cur = await conn.execute(
        "SELECT id, attempt FROM baton_jobs WHERE state = 'available' ORDER BY priority, scheduled_at, id LIMIT %s",
        [batch],
    )
    picked = await cur.fetchall()
    fetch_bytes, fetched = await explain(FETCH, params)
    ids = [r[0] for r in picked]
    attempts = [r[1] + 1 for r in picked]
    ack_bytes, _ = await explain(
        ACK, {"ids": _array(ids), "attempts": _array(attempts), "uuids": _array([producer] * len(ids))}
    )
    n = max(fetched, 1)
    return fetch_bytes / n, ack_bytes / n


async def measure(base_url: str, drop: tuple[str, ...], fetchers: int, jobs: int, batch: int) -> Run:
    async with benchlib.fresh_database(base_url) as url:
        app = baton.Baton(url, plugins=[baton.plugins.Stager()], log_events=False)

        @app.worker(name=WORKER, queue=QUEUE)
        async def noop(job: baton.Job) -> None:  # never runs: the statements are sent by hand
            return None

        try:
            for start in range(0, jobs, 5_000):
                await app.insert_all([app.new(WORKER, {"n": i}) for i in range(start, min(jobs, start + 5_000))])
        finally:
            await app.close()
        conns = [await _connect(url) for _ in range(fetchers)]
        try:
            admin = conns[0][0]
            for index in drop:
                await admin.execute(f"DROP INDEX {index}")
            await admin.execute("VACUUM ANALYZE baton_jobs")
            producers = [str(uuidlib.uuid4()) for _ in conns]
            for (conn, _), producer in zip(conns, producers, strict=True):
                for _ in range(WARMUP):
                    await _cycle(conn, producer, batch, None)
            run = Run()
            # Leave a few batches for the WAL figures.
            budget = jobs - (WARMUP * fetchers + 4) * batch

            async def worker(conn: psycopg.AsyncConnection[Any], producer: str, share: int) -> int:
                done = 0
                while done < share:
                    n = await _cycle(conn, producer, batch, run)
                    if n == 0:
                        break
                    done += n
                return done

            cpu0 = [benchlib.proc_cpu(pid) or 0.0 for _, pid in conns]
            done = await asyncio.gather(
                *(worker(c, p, budget // fetchers) for (c, _), p in zip(conns, producers, strict=True))
            )
            cpu1 = [benchlib.proc_cpu(pid) or 0.0 for _, pid in conns]
            run.cpu_us_per_job = (sum(cpu1) - sum(cpu0)) / max(sum(done), 1) * 1e6
            run.wal_fetch, run.wal_ack = await _wal(admin, producers[0], batch)
            return run
        finally:
            for conn, _ in conns:
                await conn.close()


async def main() -> None:
    parser = benchlib.argument_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=60_000, help="jobs per variant (60 000)")
    parser.add_argument("--batch", type=int, default=50, help="jobs per fetch and per ack (50)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant, alternating (3)")
    parser.add_argument(
        "--fetchers", type=int, default=2, help="also run as shipped with this many connections at once (2)"
    )
    parser.add_argument("--out", help="also write the report to this file")
    args = parser.parse_args()
    if benchlib.engine_of(args.url) != "postgres":
        sys.exit("hot_path.py measures PostgreSQL; give a postgresql:// --url")
    benchlib.quiet()
    variants = list(VARIANTS)
    if args.fetchers > 1:
        variants.append((f"as shipped, {args.fetchers} connections fetching at once", (), args.fetchers))
    results: dict[str, list[Run]] = {label: [] for label, _, _ in variants}
    for r in range(args.repeat):
        for label, drop, fetchers in variants:
            await benchlib.settle(0.10, 60)
            run = await measure(args.url, drop, fetchers, args.jobs, args.batch)
            results[label].append(run)
            print(
                f"[{r + 1}/{args.repeat}] {label}: backends {run.cpu_us_per_job:.1f} us CPU per job, "
                f"fetch p50 {statistics.median(run.fetch_ms):.3f} ms, ack p50 {statistics.median(run.ack_ms):.3f} ms",
                file=sys.stderr,
                flush=True,
            )

    info = await benchlib.describe(args.url)
    base = statistics.median(r.cpu_us_per_job for r in results[variants[0][0]])
    rows = []
    for label, _, _ in variants:
        runs = results[label]
        cpu = statistics.median(r.cpu_us_per_job for r in runs)
        rows.append(
            [
                label,
                f"{cpu:.1f} ({min(r.cpu_us_per_job for r in runs):.1f}..{max(r.cpu_us_per_job for r in runs):.1f})",
                f"{cpu - base:+.1f}" if label != variants[0][0] else "",
                f"{statistics.median(statistics.median(r.fetch_ms) for r in runs) * 1000 / args.batch:.1f}",
                f"{statistics.median(statistics.median(r.ack_ms) for r in runs) * 1000 / args.batch:.1f}",
                f"{statistics.median(r.wal_fetch for r in runs):.0f}"
                f" + {statistics.median(r.wal_ack for r in runs):.0f}",
            ]
        )
    lines = [
        f"# The hot path's cost on the server ({args.repeat} runs per variant, median (range))",
        "",
        "Command: `.venv/bin/python bench/hot_path.py "
        f"--repeat {args.repeat} --jobs {args.jobs} --batch {args.batch}`. "
        f"Each variant: a fresh database with {args.jobs:,} available jobs, then `fetch_jobs` of {args.batch} jobs and "
        "`complete_jobs` of those jobs, repeated on one connection (synchronous_commit off: CPU, not the WAL flush).",
        "",
        "## Environment",
        *[f"- {k}: {v}" for k, v in info.items()],
        "",
        benchlib.markdown_table(
            [
                "variant",
                "backend CPU per job, fetch + ack (us)",
                "against as shipped (us)",
                "fetch wall per job (us)",
                "ack wall per job (us)",
                "WAL per job, fetch + ack (bytes)",
            ],
            rows,
        ),
        "",
        "Wall times are the client's, per job of a batch (a round trip included); backend CPU is what the "
        "connections' server processes used (utime + stime), per job fetched and acked.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)


if __name__ == "__main__":
    asyncio.run(main())
