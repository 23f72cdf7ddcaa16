"""Queue limits across nodes (docs/limits.md): what they cost and whether they hold at full size.

  (a) overhead: the no-op processing benchmark of bench/throughput.py (N no-op jobs inserted up
      front, one node at concurrency C, jobs/s until every job is `completed`), without limits
      and with limits that never bind (so only their cost shows): a global limit, a global
      limit per partition (100 tenants), a rate limit. Variants run interleaved, median of
      `--repeat` runs each.
  (b) three node processes (tests/limit_nodes.py) under a global limit of 5, each node allowed
      4 at once, jobs sleeping 50 ms: the most jobs at once (from the side table the jobs write
      and from the database, sampled every 10 ms), and throughput against the ideal 5 / 50 ms.
  (c) 100 tenants, a global limit of 1 per tenant, three nodes of 20: most at once per tenant
      and in all.
  (d) a rate limit of 50 per 2 s on three nodes for 20 s (500 no-op jobs): the most starts in
      any 2 s window (by the start the limit stamps, attempted_at, and by the workers' own
      clocks), the longest gap between starts, and jobs/s against the ideal 25.

Usage:
    .venv/bin/python bench/limits.py                          # PostgreSQL on 127.0.0.1:5432
    .venv/bin/python bench/limits.py --url sqlite:///bench/results/limits.db
    .venv/bin/python bench/limits.py --jobs 20000 --repeat 3 --concurrency 50 --skip-nodes

Prints the figures and writes them to bench/results/limits-latest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import benchlib  # noqa: E402
from benchlib import now  # noqa: E402

import baton  # noqa: E402
from baton import telemetry  # noqa: E402

QUEUE = "bench"
WORKER = "bench.noop"
STOP = ("baton", "job", "stop")
EXECUTING = "SELECT count(*) FROM baton_jobs WHERE state = 'executing'"
LIMIT_NODES = str(HERE.parent / "tests" / "limit_nodes.py")
RESULTS = HERE / "results" / "limits-latest.md"

VARIANTS: dict[str, dict[str, Any]] = {
    "no limits": {},
    "global_limit 100000": {"global_limit": 100_000},
    "global_limit 100000 per tenant": {
        "global_limit": {"allowed": 100_000, "partition": {"fields": ["args"], "keys": ["tenant"]}}
    },
    "rate_limit 10^6 per 1 s": {"rate_limit": {"allowed": 1_000_000, "period": 1}},
}


# --------------------------------------------------------------------------- (a) overhead


async def process(base_url: str, jobs: int, concurrency: int, options: Mapping[str, Any]) -> float:
    """Jobs/s of one node at `concurrency` running `jobs` no-op jobs of a queue with `options`."""
    async with benchlib.fresh_database(base_url) as url:
        app = baton.Baton(
            url, queues={QUEUE: {"limit": concurrency, **options}}, plugins=[baton.plugins.Stager()], log_events=False
        )

        @app.worker(name=WORKER, queue=QUEUE)
        async def noop(job: baton.Job) -> None:
            return None

        await app.insert_all([app.new(WORKER, {"n": i, "tenant": i % 100}) for i in range(jobs)])
        seen = {"stop": 0}
        handler = f"bench-limits-{id(app)}"
        telemetry.attach(handler, STOP, lambda e, m, md: seen.__setitem__("stop", seen["stop"] + 1))

        async def all_completed() -> bool:
            return (await app.count_jobs(QUEUE)).get("completed", 0) >= jobs

        try:
            t0 = now()

            async def all_executed() -> bool:
                return seen["stop"] >= jobs

            async with app:
                await benchlib.wait_until(all_executed)
                await benchlib.wait_until(all_completed)
                t1 = now()
        finally:
            telemetry.detach(handler)
            await app.close()
    return jobs / (t1 - t0)


async def overhead(base_url: str, jobs: int, concurrency: int, repeat: int) -> dict[str, list[float]]:
    runs: dict[str, list[float]] = defaultdict(list)
    for r in range(repeat):
        for name, options in VARIANTS.items():
            runs[name].append(await process(base_url, jobs, concurrency, options))
            print(f"  run {r + 1}: {name}: {runs[name][-1]:,.0f} jobs/s", flush=True)
    return runs


# --------------------------------------------------------------------------- (b)-(d) nodes


def query(url: str, text: str) -> list[tuple[Any, ...]]:
    if url.startswith("postgres"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.execute(text)
            return cur.fetchall() if cur.description else []
    import sqlite3

    conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
    try:
        return conn.execute(text).fetchall()
    finally:
        conn.close()


def most_at_once(intervals: Sequence[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def most_in_window(starts: Sequence[float], period: float) -> int:
    ordered, most, lo = sorted(starts), 0, 0
    for hi, t in enumerate(ordered):
        while ordered[lo] <= t - period:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


@contextlib.asynccontextmanager
async def nodes(url: str, queues: Mapping[str, Any], count: int) -> AsyncIterator[None]:
    procs = []
    for i in range(count):
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                LIMIT_NODES,
                url,
                json.dumps(queues),
                "--name",
                f"node{i}",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        )
    try:
        for p in procs:
            assert p.stdout is not None
            while (await asyncio.wait_for(p.stdout.readline(), 60)).strip() != b"READY":
                pass
        yield
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
        for p in procs:
            await p.wait()


async def run_on_nodes(
    base_url: str, queues: Mapping[str, Any], specs: list[dict[str, Any]], sample: bool = False
) -> dict[str, Any]:
    """Insert `specs` (args of nodes.Record jobs in queue api) on three nodes running `queues`;
    return the side table, the jobs, the most executing jobs sampled, and the seconds taken."""
    import nodes as programs

    async with benchlib.fresh_database(base_url) as url:
        query(url, programs.EXEC_LOG_DDL)
        app = programs.app(url)
        seen: list[int] = []
        stop = asyncio.Event()

        async def sampler() -> None:
            while not stop.is_set():
                ((n,),) = await asyncio.to_thread(
                    query, url, "SELECT count(*) FROM baton_jobs WHERE state = 'executing'"
                )
                seen.append(n)
                await asyncio.sleep(0.01)

        try:
            async with nodes(url, queues, 3):
                task = asyncio.create_task(sampler()) if sample else None
                t0 = now()
                jobs = await app.insert_all([programs.Record.new(a, queue="api") for a in specs])

                async def done() -> bool:
                    return (await app.count_jobs()).get("completed", 0) >= len(specs)

                await benchlib.wait_until(done, interval=0.05)
                took = now() - t0
                stop.set()
                if task is not None:
                    await task
            log = query(url, "SELECT job_id, started, ended FROM exec_log")
            done_jobs = await app.list_jobs(states=["completed"], limit=len(specs) + 1)
        finally:
            await app.close()
    return {"log": log, "jobs": jobs, "done": done_jobs, "sampled": max(seen, default=0), "seconds": took}


async def global_five(base_url: str) -> dict[str, Any]:
    count = 500
    out = await run_on_nodes(
        base_url, {"api": {"limit": 4, "global_limit": 5}}, [{"n": i, "sleep": 0.05} for i in range(count)], True
    )
    return {
        "jobs": count,
        "most at once (side table)": most_at_once([(s, e) for _, s, e in out["log"]]),
        "most executing (sampled)": out["sampled"],
        "jobs/s": count / out["seconds"],
        "ideal jobs/s": 5 / 0.05,
    }


async def tenants(base_url: str) -> dict[str, Any]:
    partition = {"fields": ["args"], "keys": ["tenant"]}
    queues = {"api": {"limit": 20, "global_limit": {"allowed": 1, "partition": partition}}}
    out = await run_on_nodes(
        base_url, queues, [{"tenant": t, "n": i, "sleep": 0.05} for t in range(100) for i in range(5)]
    )
    tenant_of = {j.id: j.args["tenant"] for j in out["jobs"]}
    runs: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for job_id, s, e in out["log"]:
        runs[tenant_of[job_id]].append((s, e))
    return {
        "jobs": len(out["jobs"]),
        "most at once of one tenant": max(most_at_once(r) for r in runs.values()),
        "most at once in all": most_at_once([r for rs in runs.values() for r in rs]),
        "jobs/s": len(out["jobs"]) / out["seconds"],
    }


async def rate(base_url: str, allowed: int = 50, period: float = 2.0, span: float = 20.0) -> dict[str, Any]:
    count = int(allowed * span / period)
    queues = {"api": {"limit": 50, "rate_limit": {"allowed": allowed, "period": period}}}
    out = await run_on_nodes(base_url, queues, [{"n": i} for i in range(count)])
    stamped = sorted(j.attempted_at.timestamp() for j in out["done"])
    observed = [s for _, s, _ in out["log"]]
    gaps = [b - a for a, b in itertools.pairwise(stamped)]
    return {
        "jobs": count,
        f"most starts in a {period:g}s window (attempted_at)": most_in_window(stamped, period),
        f"most starts in a {period:g}s window (workers' clocks)": most_in_window(observed, period),
        "longest gap between starts (s)": max(gaps),
        "jobs/s": count / out["seconds"],
        "ideal jobs/s": allowed / period,
    }


# --------------------------------------------------------------------------- report


def report(
    args: argparse.Namespace,
    info: Mapping[str, str],
    runs: Mapping[str, list[float]],
    scenarios: Mapping[str, Mapping[str, Any]],
) -> str:
    lines = [
        "# Queue limits: overhead and behaviour at full size",
        "",
        f"Command: `.venv/bin/python bench/limits.py {' '.join(sys.argv[1:])}`".rstrip(),
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        "",
    ]
    if runs:
        base = statistics.median(runs["no limits"])
        rows = []
        for name, values in runs.items():
            median = statistics.median(values)
            rows.append(
                [
                    name,
                    f"{median:,.0f}",
                    f"{min(values):,.0f}-{max(values):,.0f}",
                    "-" if name == "no limits" else f"{(base - median) / base * 100:+.1f} %",
                ]
            )
        lines += [
            f"## (a) No-op processing, {args.jobs} jobs, one node at concurrency {args.concurrency} "
            f"(median of {args.repeat}, interleaved)",
            "",
            benchlib.markdown_table(["queue options", "jobs/s", "range", "overhead"], rows),
            "",
        ]
    for title, figures in scenarios.items():
        lines += [
            f"## {title}",
            "",
            benchlib.markdown_table(["figure", "value"], [[k, _fmt(v)] for k, v in figures.items()]),
            "",
        ]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else str(value)


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=benchlib.default_url())
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-nodes", action="store_true")
    args = parser.parse_args(argv)
    benchlib.quiet()
    info = await benchlib.describe(args.url)
    benchlib.print_environment(info)
    runs: dict[str, list[float]] = {}
    if not args.skip_overhead:
        print(f"(a) overhead: {args.jobs} no-op jobs at concurrency {args.concurrency}", flush=True)
        runs = await overhead(args.url, args.jobs, args.concurrency, args.repeat)
    scenarios: dict[str, dict[str, Any]] = {}
    if not args.skip_nodes:
        for title, scenario in (
            ("(b) Three nodes (4 each), global_limit 5, jobs of 50 ms", global_five),
            ("(c) 100 tenants, global_limit 1 per tenant, three nodes of 20, jobs of 50 ms", tenants),
            ("(d) rate_limit 50 per 2 s, three nodes, 20 s of no-op jobs", rate),
        ):
            print(title, flush=True)
            scenarios[title] = await scenario(args.url)
            for k, v in scenarios[title].items():
                print(f"  {k}: {_fmt(v)}", flush=True)
    text = report(args, info, runs, scenarios)
    print(text)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text + "\n")
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
