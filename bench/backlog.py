"""Throughput with a large backlog: does a node slow down as a queue of a million jobs drains?

For each run, in a fresh PostgreSQL database:

  (a) empty table: `--small` no-op jobs (20 000) inserted, one node at concurrency C (50)
      started, jobs/s until all are completed — the reference;
  (b) backlog: `--backlog` no-op jobs (1 000 000) inserted by `insert_all`, `ANALYZE`d, one node
      at concurrency C started and sampled every `--window` seconds for `--seconds` (60) or
      until the backlog is drained; jobs/s per window and over the whole run.

It prints both, the ratio of (b) to (a), and what PostgreSQL saw of the jobs table during (b)
(`pg_stat_user_tables`: updates, HOT updates, dead tuples, autovacuum runs; index sizes), so a
slowdown can be traced to index bloat or vacuum.

Usage:
    .venv/bin/python bench/backlog.py                         # 1 000 000 jobs, 60 s, c50
    .venv/bin/python bench/backlog.py --backlog 200000 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
import psycopg
from benchlib import now, rate
from throughput import QUEUE, make_app, specs

STATS = """
SELECT n_tup_upd, n_tup_hot_upd, n_dead_tup, n_live_tup, autovacuum_count, vacuum_count,
       pg_size_pretty(pg_table_size('baton_jobs')) AS table_size,
       pg_size_pretty(pg_indexes_size('baton_jobs')) AS indexes_size
FROM pg_stat_user_tables WHERE relname = 'baton_jobs'
"""
INDEXES = """
SELECT indexrelname AS name, pg_size_pretty(pg_relation_size(indexrelid)) AS size, idx_scan, idx_tup_read
FROM pg_stat_user_indexes WHERE relname = 'baton_jobs' ORDER BY pg_relation_size(indexrelid) DESC
"""


@dataclass(slots=True)
class BacklogRun:
    """One run: the empty-table reference and the backlog's windows."""

    reference: float = 0.0  # jobs/s draining `--small` jobs from an empty table
    windows: list[float] = field(default_factory=list)  # jobs/s per window during the backlog run
    overall: float = 0.0  # jobs/s over the whole backlog run
    stats_before: dict[str, Any] = field(default_factory=dict)
    stats_after: dict[str, Any] = field(default_factory=dict)
    indexes: list[dict[str, Any]] = field(default_factory=list)


async def _completed(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT count(*) FROM baton_jobs WHERE state = 'completed'")
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def _rows(url: str, query: str) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        cur = await conn.execute(query)
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


async def reference(base_url: str, jobs: int, concurrency: int) -> float:
    """Jobs/s draining `jobs` no-op jobs from an otherwise empty table."""
    async with benchlib.fresh_database(base_url) as url:
        app = make_app(url, {QUEUE: concurrency})
        await app.insert_all(specs(app, jobs))
        t0 = now()
        async with app:
            while (await app.count_jobs(QUEUE)).get("completed", 0) < jobs:
                await asyncio.sleep(0.01)
        seconds = now() - t0
        await app.close()
    return jobs / seconds


async def backlog(base_url: str, jobs: int, concurrency: int, seconds: float, window: float, run: BacklogRun) -> None:
    """Drain a backlog of `jobs` for up to `seconds`, sampling the completed count per window."""
    async with benchlib.fresh_database(base_url) as url:
        app = make_app(url, {QUEUE: concurrency})
        t_insert = now()
        for start in range(0, jobs, 100_000):
            await app.insert_all(specs(app, min(100_000, jobs - start)))
        print(f"  inserted {jobs:,} jobs in {now() - t_insert:.1f} s", flush=True)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("ANALYZE baton_jobs")
        run.stats_before = (await _rows(url, STATS))[0]
        last, t_last = 0, now()
        t0 = t_last
        async with app:
            while now() - t0 < seconds:
                await asyncio.sleep(window)
                done = await _completed(url)
                t = now()
                run.windows.append((done - last) / (t - t_last))
                print(f"  {t - t0:5.1f} s: {done:,} completed, {rate(run.windows[-1])} jobs/s", flush=True)
                last, t_last = done, t
                if done >= jobs:
                    break
        run.overall = last / (t_last - t0)
        run.stats_after = (await _rows(url, STATS))[0]
        run.indexes = await _rows(url, INDEXES)
        await app.close()


def report(runs: Sequence[BacklogRun], args: argparse.Namespace) -> str:
    """The median figures as Markdown, and the table statistics of the last run."""
    ref = statistics.median(r.reference for r in runs)
    overall = statistics.median(r.overall for r in runs)
    lines = [
        benchlib.markdown_table(
            ["measurement", "jobs/s (median of runs)"],
            [
                [f"empty table: {args.small:,} no-op jobs at concurrency {args.concurrency}", rate(ref)],
                [f"backlog of {args.backlog:,}: whole run ({args.seconds:g} s or until drained)", rate(overall)],
                ["backlog: first window", rate(statistics.median(r.windows[0] for r in runs))],
                ["backlog: last full window", rate(statistics.median(_last_full(r) for r in runs))],
                ["backlog / empty table", f"{overall / ref * 100:.0f} %"],
            ],
        ),
        "",
        "Per window (last run): " + ", ".join(rate(w) for w in runs[-1].windows),
        "",
        "baton_jobs in pg_stat_user_tables before and after the backlog run (last run):",
        "",
        benchlib.markdown_table(
            ["", *runs[-1].stats_before.keys()],
            [
                ["before", *(str(v) for v in runs[-1].stats_before.values())],
                ["after", *(str(v) for v in runs[-1].stats_after.values())],
            ],
        ),
        "",
        "Indexes after the run:",
        "",
        benchlib.markdown_table(
            ["index", "size", "scans", "tuples read"],
            [[i["name"], i["size"], str(i["idx_scan"]), str(i["idx_tup_read"])] for i in runs[-1].indexes],
        ),
    ]
    return "\n".join(lines)


def _last_full(run: BacklogRun) -> float:
    # The last window may end early when the backlog drains; the one before it is full.
    return run.windows[-2] if len(run.windows) > 1 else run.windows[-1]


async def main(argv: Sequence[str] | None = None) -> int:
    """Run the reference and the backlog `--repeat` times and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", default=benchlib.default_url(), help="PostgreSQL server (%(default)s)")
    parser.add_argument("--backlog", type=int, default=1_000_000, help="jobs in the backlog (%(default)s)")
    parser.add_argument("--small", type=int, default=20_000, help="jobs of the empty-table reference (%(default)s)")
    parser.add_argument("--concurrency", type=int, default=50, help="queue concurrency (%(default)s)")
    parser.add_argument("--seconds", type=float, default=60.0, help="longest backlog run (%(default)s)")
    parser.add_argument("--window", type=float, default=5.0, help="sampling window, seconds (%(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="runs; medians are shown (%(default)s)")
    args = parser.parse_args(argv)
    if benchlib.engine_of(args.url) != "postgres":
        parser.error("the backlog benchmark measures PostgreSQL's index and vacuum behaviour; give a postgresql:// URL")
    info = await benchlib.describe(args.url)
    print("# Baton backlog benchmark\n")
    benchlib.print_environment(info)
    runs = []
    for r in range(1, args.repeat + 1):
        run = BacklogRun()
        run.reference = await reference(args.url, args.small, args.concurrency)
        print(f"[run {r}/{args.repeat}] empty table: {rate(run.reference)} jobs/s", flush=True)
        await backlog(args.url, args.backlog, args.concurrency, args.seconds, args.window, run)
        print(f"[run {r}/{args.repeat}] backlog: {rate(run.overall)} jobs/s", flush=True)
        runs.append(run)
    print()
    print(report(runs, args))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
