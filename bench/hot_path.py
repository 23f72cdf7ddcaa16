"""What PostgreSQL spends on Baton's hot path (issue #18): the server CPU per job of the fetch
and the ack as a node sends them, and what each index that these two statements write costs,
measured by dropping it in a scratch database.

Every state change of a job is a non-HOT update (the state is in the indexes' keys and
predicates), so each one writes a new heap tuple, its WAL, a primary-key entry and an entry in
every index whose predicate the new state matches: the fetch (available -> executing) writes
the executing index and the full (queue, state, id) index of the dashboard, the ack (executing
-> completed) the completed index and (queue, state, id) again.

Per variant, in a fresh database: `--jobs` available jobs inserted with `app.insert_all`, then
one loop (or `--fetchers` loops at once) of Baton's own operations, as a producer and its acker
run them: `transitions.fetch_next` of `--batch` jobs on the relaxed pool, `transitions.ack_jobs`
of their completions in autocommit (synchronous commit, as a node acks). Reported: the wall
time of each call per job (Baton's Python, a round trip and, for the ack, the WAL flush
included), the CPU time of the database's backends (`/proc/<pid>/stat`) and the WAL written
(`pg_current_wal_lsn()`), both per job fetched and acked. Variants alternate, `--repeat`
times each; the table shows medians.

Usage:
    .venv/bin/python bench/hot_path.py                  # ~1.5 min
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
from baton.store import transitions
from baton.store.jobs import Ack

QUEUE, WORKER, NODE = "bench", "bench.noop", "bench"
WARMUP = 20  # batches per loop before the clock starts

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
    wal_per_job: float = 0.0  # bytes


async def _cycle(engine: Any, producer: str, batch: int, run: Run | None) -> int:
    """One fetch of `batch` jobs and the ack of their completion; the number of jobs."""
    t0 = time.perf_counter()
    jobs, _ = await engine.run_relaxed(transitions.fetch_next, QUEUE, NODE, producer, batch)
    t1 = time.perf_counter()
    if not jobs:
        return 0
    result = await engine.run_autocommit(transitions.ack_jobs, [Ack(job, "completed") for job in jobs], NODE)
    t2 = time.perf_counter()
    if len(result.acked) != len(jobs):
        raise RuntimeError(f"{len(jobs) - len(result.acked)} of {len(jobs)} acks did not apply")
    if run is not None:
        run.fetch_ms.append((t1 - t0) * 1000)
        run.ack_ms.append((t2 - t1) * 1000)
    return len(jobs)


async def _wal_lsn(conn: psycopg.AsyncConnection[Any]) -> str:
    cur = await conn.execute("SELECT pg_current_wal_lsn()::text")
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def measure(base_url: str, drop: tuple[str, ...], fetchers: int, jobs: int, batch: int) -> Run:
    async with benchlib.fresh_database(base_url) as url:
        app = baton.Baton(url, plugins=[baton.plugins.Stager()], log_events=False)

        @app.worker(name=WORKER, queue=QUEUE)
        async def noop(job: baton.Job) -> None:  # never runs: the loops fetch and ack by hand
            return None

        try:
            for start in range(0, jobs, 5_000):
                await app.insert_all([app.new(WORKER, {"n": i}) for i in range(start, min(jobs, start + 5_000))])
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
                for index in drop:
                    await admin.execute(f"DROP INDEX {index}")
                await admin.execute("VACUUM ANALYZE baton_jobs")
                producers = [str(uuidlib.uuid4()) for _ in range(fetchers)]

                async def warm(producer: str) -> None:
                    for _ in range(WARMUP):
                        await _cycle(app.engine, producer, batch, None)

                # The loops at once, so the pools hold the connections the measured loops use.
                await asyncio.gather(*(warm(p) for p in producers))
                run = Run()
                share = (jobs - WARMUP * fetchers * batch) // fetchers

                async def loop(producer: str) -> int:
                    done = 0
                    while done < share:
                        n = await _cycle(app.engine, producer, batch, run)
                        if n == 0:
                            break
                        done += n
                    return done

                cpu0, lsn0 = await benchlib.backend_cpu(url), await _wal_lsn(admin)
                done = sum(await asyncio.gather(*(loop(p) for p in producers)))
                cpu1, lsn1 = await benchlib.backend_cpu(url), await _wal_lsn(admin)
                cur = await admin.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", [lsn1, lsn0])
                row = await cur.fetchone()
                assert row is not None
                # The pools' connections and the admin one (its readings take a few hundred
                # microseconds); a connection the pools opened meanwhile counts whole.
                cpu = sum(t - cpu0.get(pid, 0.0) for pid, t in cpu1.items())
                run.cpu_us_per_job = cpu / max(done, 1) * 1e6
                run.wal_per_job = float(row[0]) / max(done, 1)
                return run
        finally:
            await app.close()


async def main() -> None:
    parser = benchlib.argument_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=60_000, help="jobs per variant (60 000)")
    parser.add_argument("--batch", type=int, default=50, help="jobs per fetch and per ack (50)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant, alternating (3)")
    parser.add_argument(
        "--fetchers", type=int, default=2, help="also run as shipped with this many fetch-and-ack loops at once (2)"
    )
    parser.add_argument("--out", help="also write the report to this file")
    args = parser.parse_args()
    if benchlib.engine_of(args.url) != "postgres":
        sys.exit("hot_path.py measures PostgreSQL; give a postgresql:// --url")
    benchlib.quiet()
    variants = list(VARIANTS)
    if args.fetchers > 1:
        variants.append((f"as shipped, {args.fetchers} loops fetching at once", (), args.fetchers))
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
                f"{statistics.median(r.wal_per_job for r in runs):.0f}",
            ]
        )
    lines = [
        f"# The hot path's cost on the server ({args.repeat} runs per variant, median (range))",
        "",
        "Command: `.venv/bin/python bench/hot_path.py "
        f"--repeat {args.repeat} --jobs {args.jobs} --batch {args.batch}`. "
        f"Each variant: a fresh database with {args.jobs:,} available jobs, then Baton's fetch of {args.batch} jobs "
        "(`transitions.fetch_next`, relaxed pool) and the ack of their completions (`transitions.ack_jobs`, "
        "autocommit, synchronous commit), repeated by one loop as a producer and its acker send them.",
        "",
        "## Environment",
        *[f"- {k}: {v}" for k, v in info.items()],
        "",
        benchlib.markdown_table(
            [
                "variant",
                "backend CPU per job, fetch + ack (us)",
                "against as shipped (us)",
                "fetch call per job (us)",
                "ack call per job (us)",
                "WAL per job (bytes)",
            ],
            rows,
        ),
        "",
        "Call times are the client's, per job of a batch (Baton's Python, a round trip and, for the ack, the WAL "
        "flush included); backend CPU is what the database's server processes used (utime + stime) and WAL what "
        "the server wrote meanwhile (`pg_current_wal_lsn()`), per job fetched and acked.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)


if __name__ == "__main__":
    asyncio.run(main())
