"""Baton throughput and latency benchmark.

Measures, each in a fresh database so the figures are comparable:

  (a) bulk insert: `insert_all` of N no-op jobs (the engine sends 5 000 per statement), jobs/s;
  (b) processing: N no-op async jobs inserted up front, then one node started with queue
      concurrency C (10 and 50 by default); jobs/s from the start of the node until every job
      is `completed` in the database (acks included);
  (c) insert-to-start latency on an idle queue: a started node, one job inserted at a time; the
      latency runs from just before `await app.insert()` to the first line of the worker
      function. Measured for an insert made by the node's own app (in-process wake-up) and by a
      second, never-started app on the same database (the wake-up comes through LISTEN/NOTIFY on
      PostgreSQL, through the polled notices table on SQLite).

Usage:
    .venv/bin/python bench/throughput.py                      # PostgreSQL on 127.0.0.1:5432
    .venv/bin/python bench/throughput.py --url sqlite:///bench/results/bench.db
    .venv/bin/python bench/throughput.py --jobs 20000 --repeat 3 --concurrency 10,50 --samples 200

Every figure is the median of `--repeat` runs, with the range in brackets.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
from benchlib import Summary, ms, now, rate, secs

import baton
from baton import telemetry

QUEUE = "bench"
WORKER = "bench.noop"
PROBE = "bench.probe"
STOP = ("baton", "job", "stop")
EXCEPTION = ("baton", "job", "exception")
LATENCY_CONCURRENCY = 10


KINDS = ("async", "sync")  # worker functions: `async def` (run on the loop) or `def` (in threads)


def make_app(url: str, queues: Mapping[str, int] | None = None, kind: str = "async") -> baton.Baton:
    """An app with nothing but the Stager plugin and no event logging, and the no-op worker
    (an `async def` or a plain `def`, by `kind`)."""
    app = baton.Baton(url, queues=queues, plugins=[baton.plugins.Stager()], log_events=False)
    if kind == "sync":

        @app.worker(name=WORKER, queue=QUEUE)
        def noop_sync(job: baton.Job) -> None:
            return None

    else:

        @app.worker(name=WORKER, queue=QUEUE)
        async def noop(job: baton.Job) -> None:
            return None

    return app


def specs(app: baton.Baton, n: int) -> list[baton.JobSpec]:
    """`n` no-op jobs for `app`."""
    return [app.new(WORKER, {"n": i}) for i in range(n)]


# --------------------------------------------------------------------------- (a) bulk insert


@dataclass(slots=True)
class InsertRun:
    """One bulk insert: how long `insert_all` took, and building the specs before it."""

    jobs: int
    seconds: float
    build_seconds: float
    others: float = math.nan  # other processes' CPU share during the run

    @property
    def per_second(self) -> float:
        return self.jobs / self.seconds


async def bulk_insert(base_url: str, jobs: int) -> InsertRun:
    """Time one `insert_all` of `jobs` no-op jobs into a fresh database."""
    async with benchlib.fresh_database(base_url) as url:
        app = make_app(url)
        try:
            await app.count_jobs()  # open the pool and warm the query cache outside the timing
            meter = benchlib.CpuMeter(url)
            await meter.start()
            t0 = now()
            batch = specs(app, jobs)
            t1 = now()
            inserted = await app.insert_all(batch)
            t2 = now()
            await meter.stop()
            if len(inserted) != jobs:
                raise RuntimeError(f"insert_all returned {len(inserted)} jobs for {jobs}")
        finally:
            await app.close()
    return InsertRun(jobs, t2 - t1, t1 - t0, meter.others)


# --------------------------------------------------------------------------- (b) processing


@dataclass(slots=True)
class ProcessRun:
    """One processing run: node start to every job completed (acked), and to the last job's
    end in the worker (before its ack is written)."""

    jobs: int
    concurrency: int
    seconds: float
    executed_seconds: float
    errors: int
    others: float = math.nan  # other processes' CPU share during the run

    @property
    def per_second(self) -> float:
        return self.jobs / self.seconds


async def process(base_url: str, jobs: int, concurrency: int, kind: str = "async") -> ProcessRun:
    """Insert `jobs` no-op jobs, then time one node at `concurrency` running them all."""
    async with benchlib.fresh_database(base_url) as url:
        app = make_app(url, {QUEUE: concurrency}, kind)
        await app.insert_all(specs(app, jobs))
        loop = asyncio.get_running_loop()
        executed = loop.create_future()
        seen = {"stop": 0, "errors": 0}

        def on_end(event: Sequence[str], measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
            seen["stop"] += 1
            if tuple(event) == EXCEPTION:
                seen["errors"] += 1
            if seen["stop"] >= jobs and not executed.done():
                executed.set_result(now())

        handler = f"bench-process-{id(app)}"
        telemetry.attach_many(handler, [STOP, EXCEPTION], on_end)

        async def all_completed() -> bool:
            return (await app.count_jobs(QUEUE)).get("completed", 0) + seen["errors"] >= jobs

        meter = benchlib.CpuMeter(url)
        try:
            await meter.start()
            t0 = now()
            async with app:
                t_executed = await executed
                # The stop event fires when the worker returns; the ack is written after it.
                await benchlib.wait_until(all_completed)
                t1 = now()
                await meter.stop()
        finally:
            telemetry.detach(handler)
            await app.close()
    return ProcessRun(jobs, concurrency, t1 - t0, t_executed - t0, seen["errors"], meter.others)


# --------------------------------------------------------------------------- (c) latency


@dataclass(slots=True)
class LatencyRun:
    """Insert-to-start latencies (seconds) of one run, and how long the insert call itself took."""

    mode: str
    latencies: list[float] = field(default_factory=list)
    insert_calls: list[float] = field(default_factory=list)
    others: float = math.nan  # other processes' CPU share during the run


async def latency(base_url: str, samples: int, warmup: int, concurrency: int, kind: str = "async") -> list[LatencyRun]:
    """Start a node on an idle queue and time insert -> worker start, one job at a time, for an
    insert through the node's own app (`local`) and through another app (`remote`)."""
    async with benchlib.fresh_database(base_url) as url:
        started: dict[int, asyncio.Future[float]] = {}
        loop = asyncio.get_running_loop()

        def arrived(n: int, t: float) -> None:
            fut = started.get(n)
            if fut is not None and not fut.done():
                fut.set_result(t)

        def register(app: baton.Baton) -> None:
            if kind == "sync":

                @app.worker(name=PROBE, queue=QUEUE)
                def probe_sync(job: baton.Job) -> None:
                    t = now()  # the first line of the worker function, in a worker thread
                    loop.call_soon_threadsafe(arrived, job.args["n"], t)

            else:

                @app.worker(name=PROBE, queue=QUEUE)
                async def probe(job: baton.Job) -> None:
                    arrived(job.args["n"], now())  # the first line of the worker function

        node = make_app(url, {QUEUE: concurrency})
        register(node)
        other = make_app(url)
        register(other)
        runs = [LatencyRun("local"), LatencyRun("remote")]
        seq = 0
        try:
            async with node:
                await other.count_jobs()  # open the second app's pool outside the timing
                for run in runs:
                    meter = benchlib.CpuMeter(url)
                    await meter.start()
                    inserter = node if run.mode == "local" else other
                    for i in range(warmup + samples):
                        seq += 1
                        fut: asyncio.Future[float] = loop.create_future()
                        started[seq] = fut
                        spec = inserter.new(PROBE, {"n": seq})
                        t0 = now()
                        await inserter.insert(spec)
                        t1 = now()
                        t_start = await fut
                        del started[seq]
                        if i >= warmup:
                            run.latencies.append(t_start - t0)
                            run.insert_calls.append(t1 - t0)
                        # Keep the queue idle: the next insert waits until this job's ack is in.
                        done = seq

                        async def acked(done: int = done) -> bool:
                            return (await node.count_jobs(QUEUE)).get("completed", 0) >= done

                        await benchlib.wait_until(acked)
                    run.others = await meter.stop()
        finally:
            await other.close()
            await node.close()
    return runs


# --------------------------------------------------------------------------- report


@dataclass(slots=True)
class Results:
    """Everything one invocation measured, per repeat."""

    inserts: list[InsertRun] = field(default_factory=list)
    processing: dict[tuple[str, int], list[ProcessRun]] = field(default_factory=dict)  # (kind, concurrency)
    latencies: dict[tuple[str, str], list[LatencyRun]] = field(default_factory=dict)  # (kind, mode)
    background: list[float] = field(default_factory=list)  # other processes' CPU before each run


def report(results: Results, jobs: int, samples: int) -> str:
    """The results as one Markdown table (median of the repeats, range in brackets)."""
    rows: list[list[str]] = []
    if results.inserts:
        rows.append(
            [
                f"bulk insert, insert_all of {jobs:,} jobs",
                Summary([r.per_second for r in results.inserts]).cell(rate) + " jobs/s",
                f"insert_all {Summary([r.seconds for r in results.inserts]).cell(secs)}; building the specs "
                f"{Summary([r.build_seconds for r in results.inserts]).cell(secs)} more",
            ]
        )
    for (kind, concurrency), runs in sorted(results.processing.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        errors = sum(r.errors for r in runs)
        rows.append(
            [
                f"processed no-op {kind} jobs, {jobs:,} at concurrency {concurrency}",
                Summary([r.per_second for r in runs]).cell(rate) + " jobs/s",
                f"start to all completed {Summary([r.seconds for r in runs]).cell(secs)}; last worker return "
                f"at {Summary([r.executed_seconds for r in runs]).cell(secs)}"
                + (f"; {errors} errors" if errors else ""),
            ]
        )
    for (kind, mode), lruns in results.latencies.items():
        label = "same app (in-process wake-up)" if mode == "local" else "other app (notification wake-up)"
        label += f", {kind} worker"
        p50 = Summary([benchlib.percentile(r.latencies, 50) for r in lruns])
        p99 = Summary([benchlib.percentile(r.latencies, 99) for r in lruns])
        calls = Summary([benchlib.percentile(r.insert_calls, 50) for r in lruns])
        rows.append(
            [
                f"insert-to-start p50, idle queue, insert from {label}",
                p50.cell(ms),
                f"p99 {p99.cell(ms)}; the insert call alone p50 {calls.cell(ms)}; {samples} samples per run",
            ]
        )
    table = benchlib.markdown_table(["measurement", "result (median, range)", "detail"], rows)
    during = [r.others for r in results.inserts]
    during += [r.others for runs in results.processing.values() for r in runs]
    during += [r.others for runs in results.latencies.values() for r in runs]
    table += benchlib.background_note(results.background, during)
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = benchlib.argument_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per insert/processing run (%(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is shown (%(default)s)")
    parser.add_argument("--concurrency", default="10,50", help="queue concurrencies to process at (%(default)s)")
    parser.add_argument("--samples", type=int, default=200, help="latency samples per run (%(default)s)")
    parser.add_argument("--warmup", type=int, default=10, help="latency samples discarded first (%(default)s)")
    benchlib.Quiet().add_arguments(parser)
    parser.add_argument(
        "--only",
        default="insert,process,latency",
        help="comma-separated subset of insert,process,latency (%(default)s)",
    )
    parser.add_argument(
        "--kinds",
        default="async",
        help="worker kinds to process and time, comma-separated subset of async,sync (%(default)s)",
    )
    args = parser.parse_args(argv)
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not args.kinds or set(args.kinds) - set(KINDS):
        parser.error(f"--kinds: choose from {', '.join(KINDS)}")
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = args.only - {"insert", "process", "latency"}
    if unknown:
        parser.error(f"--only: unknown measurement(s) {sorted(unknown)}")
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error("--concurrency takes integers, e.g. 10,50")
    if args.jobs < 1 or args.repeat < 1 or args.samples < 1 or args.warmup < 0 or not args.concurrency:
        parser.error("--jobs, --repeat, --samples and --concurrency must be positive")
    benchlib.engine_of(args.url)
    return args


async def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected measurements `--repeat` times and print the table."""
    args = parse_args(argv)
    info = await benchlib.describe(args.url)
    print(f"# Baton throughput benchmark ({info['engine']})\n")
    benchlib.print_environment(info)
    results = Results()
    quiet = benchlib.Quiet.from_args(args)

    for r in range(1, args.repeat + 1):
        tag = f"[run {r}/{args.repeat}]"
        if "insert" in args.only:
            run, before = await benchlib.measure(
                lambda: bulk_insert(args.url, args.jobs), lambda x: x.others, quiet, "bulk insert"
            )
            results.background.append(before)
            results.inserts.append(run)
            print(
                f"{tag} bulk insert: {rate(run.per_second)} jobs/s ({secs(run.seconds)}); "
                f"other processes' CPU {benchlib.pct(run.others)}",
                flush=True,
            )
        if "process" in args.only:
            for c in args.concurrency:
                for kind in args.kinds:
                    prun, before = await benchlib.measure(
                        functools.partial(process, args.url, args.jobs, c, kind),
                        lambda x: x.others,
                        quiet,
                        f"{kind} concurrency {c}",
                    )
                    results.background.append(before)
                    results.processing.setdefault((kind, c), []).append(prun)
                    print(
                        f"{tag} processed {kind} at concurrency {c}: {rate(prun.per_second)} jobs/s "
                        f"({secs(prun.seconds)}); other processes' CPU {benchlib.pct(prun.others)}",
                        flush=True,
                    )
        for kind in args.kinds if "latency" in args.only else ():
            lruns, before = await benchlib.measure(
                functools.partial(latency, args.url, args.samples, args.warmup, LATENCY_CONCURRENCY, kind),
                lambda runs: max(x.others for x in runs),
                quiet,
                f"{kind} latency",
            )
            results.background.append(before)
            for lrun in lruns:
                results.latencies.setdefault((kind, lrun.mode), []).append(lrun)
                print(
                    f"{tag} {kind} latency {lrun.mode}: p50 {ms(benchlib.percentile(lrun.latencies, 50))}, "
                    f"p99 {ms(benchlib.percentile(lrun.latencies, 99))}; "
                    f"other processes' CPU {benchlib.pct(lrun.others)}",
                    flush=True,
                )
    print()
    print(report(results, args.jobs, args.samples))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
