"""Baton hop benchmark: how much a workflow step, a hop between steps and a chain link cost
against plain jobs and against a bare LISTEN/NOTIFY round trip, all in one run (issue #19).

Measured, each in a fresh database, one node at concurrency 50, async no-op workers, median of
`--repeat` runs:
  - notify: a bare LISTEN/NOTIFY round trip (one connection notifies, another one that listens
    receives it), the yardstick for hops;
  - plain: `--jobs` plain jobs, the first one's start to every job completed;
  - small workflows: `--jobs / 10` workflows of 10 steps (a root, 8 steps depending on it, a
    fan-in on those 8), the first step's start to every step completed; the ratio to plain;
  - sequential: one workflow of `--hops` steps, each depending on the one before: time per hop
    (a step's ack, the release of the next, its start), its ratio to the NOTIFY round trip, and
    the last step's return to the finished event;
  - chain_by: `--hops` links of one chain key, time per link;
  - 100 chains: 100 chain keys of `--jobs / 100` links each, links/s.

Usage:
    .venv/bin/python bench/hops.py                       # PostgreSQL, 5 000 jobs, 500 hops
    .venv/bin/python bench/hops.py --url sqlite:///bench/results/hops.db --repeat 1
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
import psycopg
from benchlib import Summary, ms, now, rate

import baton
from baton import telemetry

QUEUE = "bench"
START = ("baton", "job", "start")
STOP = ("baton", "job", "stop")
CONCURRENCY = 50
ANALYZE = True


def make_app(url: str) -> baton.Baton:
    """An app with the no-op step worker and a chained no-op worker."""
    app = baton.Baton(url, queues={QUEUE: CONCURRENCY}, plugins=[baton.plugins.Stager()], log_events=False)

    @app.worker(name="bench.step", queue=QUEUE)
    async def step(job: baton.Job) -> None:
        return None

    @app.worker(name="bench.link", queue=QUEUE, chain_by=["args.k"])
    async def link(job: baton.Job) -> None:
        return None

    return app


@dataclass(slots=True)
class Run:
    """Seconds from the first job's start to `n` completed jobs; for a workflow, also to the
    last step's return and to the finished event."""

    n: int
    seconds: float
    last_stop: float = float("nan")
    finished: float = float("nan")
    others: float = float("nan")


async def run_kind(base_url: str, kind: str, jobs: int, hops: int) -> Run:
    """Insert the work of `kind`, then time one node doing all of it."""
    async with benchlib.fresh_database(base_url) as url:
        # The work is inserted by an app of its own: the measured app opens its pool after the
        # ANALYZE below, as a node's connections in steady state have planned their statements
        # on current statistics (an ANALYZE invalidates the plans of every open connection, and
        # the next use of each statement plans it again: about 0.7 ms for a workflow's finish
        # on this VM, paid once per connection and ANALYZE).
        app = make_app(url)
        last_step = ""
        wid = ""
        if kind == "plain":
            n = jobs
            await app.insert_all([app.new("bench.step", {"i": i}) for i in range(n)])
        elif kind == "small":
            flows = []
            for w in range(jobs // 10):
                wf = baton.Workflow(label=f"small-{w}")
                wf.add("root", app.new("bench.step", {"w": w}))
                for i in range(8):
                    wf.add(f"m{i}", app.new("bench.step", {"w": w, "i": i}), deps=["root"])
                wf.add("fanin", app.new("bench.step", {"w": w}), deps=[f"m{i}" for i in range(8)])
                flows.append(wf)
            n = len(flows) * 10
            if hasattr(app, "insert_workflows"):
                await app.insert_workflows(flows)
            else:  # a Baton from before insert_workflows (to compare against an older version)
                for flow in flows:
                    await app.insert_workflow(flow)
        elif kind == "sequential":
            n = hops
            wf = baton.Workflow(label="sequential")
            previous: list[str] = []
            for i in range(n):
                wf.add(f"s{i}", app.new("bench.step", {"i": i}), deps=previous)
                previous = [f"s{i}"]
            last_step = previous[0]
            wid = await app.insert_workflow(wf)
        elif kind == "chain_by":
            n = hops
            await app.insert_all([app.new("bench.link", {"k": "one", "i": i}) for i in range(n)])
        elif kind == "chains":
            per = max(1, jobs // 100)
            n = per * 100
            # Round robin, so every chain has links waiting from the start.
            await app.insert_all(
                [app.new("bench.link", {"k": f"c{c}", "i": i}) for i in range(per) for c in range(100)]
            )
        else:
            raise ValueError(kind)

        await app.close()
        if ANALYZE and benchlib.engine_of(url) == "postgres":
            # Steady state: autovacuum keeps statistics on tables that live; a fresh database
            # has none, and the planner would plan the run's first statements blind.
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute("ANALYZE")
        app = make_app(url)
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[float] = loop.create_future()
        seen = {"stops": 0, "last_stop": float("nan"), "first_start": float("nan")}

        def on_stop(event: Sequence[str], measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
            if tuple(event) == START:
                if seen["first_start"] != seen["first_start"]:  # NaN: the first start
                    seen["first_start"] = now()
                return
            seen["stops"] += 1
            job = metadata.get("job")
            if last_step and job is not None and job.step == last_step:
                seen["last_stop"] = now()

        def on_finished(event: dict[str, Any]) -> None:
            if event.get("workflow_id") == wid and not finished.done():
                finished.set_result(now())

        async def all_completed() -> bool:
            return (await app.count_jobs(QUEUE)).get("completed", 0) >= n

        handler = f"bench-hops-{id(app)}"
        telemetry.attach_many(handler, [START, STOP], on_stop)
        app.on_workflow_finished(on_finished)
        await app.count_jobs()  # open the pool outside the timing
        meter = benchlib.CpuMeter(url)
        try:
            await meter.start()
            t0 = now()
            async with app:
                while seen["stops"] < n:
                    await asyncio.sleep(0.001)
                await benchlib.wait_until(all_completed)
                t1 = now()
                t_finished = await asyncio.wait_for(finished, 30) if wid else float("nan")
                await meter.stop()
        finally:
            telemetry.detach(handler)
            await app.close()
    # Timed from the first job's start: a node's start-up (migrations check, leader election,
    # first poll) is the same for every kind and would blur the ratios.
    t0 = seen["first_start"]
    return Run(n, t1 - t0, seen["last_stop"] - t0, t_finished - t0, meter.others)


@dataclass(slots=True)
class Results:
    rtt: list[float] = field(default_factory=list)
    runs: dict[str, list[Run]] = field(default_factory=dict)


def report(res: Results) -> str:
    """The runs as one Markdown table (median of the repeats, range in brackets)."""
    rtt = statistics.median(res.rtt) if res.rtt else float("nan")

    def rates(kind: str) -> list[float]:
        return [r.n / r.seconds for r in res.runs[kind]]

    def per(kind: str) -> list[float]:
        return [r.seconds / r.n for r in res.runs[kind]]

    plain = statistics.median(rates("plain"))
    small = statistics.median(rates("small"))
    seq = statistics.median(per("sequential"))
    link = statistics.median(per("chain_by"))
    runs = res.runs
    lag = [r.finished - r.last_stop for r in runs["sequential"]]
    rows = [
        ["bare LISTEN/NOTIFY round trip", Summary(res.rtt).cell(ms)],
        [f"plain jobs ({runs['plain'][0].n:,})", f"{Summary(rates('plain')).cell(rate)} jobs/s"],
        [
            f"steps of {runs['small'][0].n // 10:,} workflows of 10 steps",
            f"{Summary(rates('small')).cell(rate)} steps/s = {small / plain:.2f}x plain",
        ],
        [
            f"sequential workflow of {runs['sequential'][0].n:,} steps: per hop",
            f"{Summary(per('sequential')).cell(ms)} = {seq / rtt:.1f}x NOTIFY"
            f" ({Summary([1 / p for p in per('sequential')]).cell(rate)} steps/s)",
        ],
        ["last step's return to the finished event", Summary(lag).cell(ms)],
        [
            f"chain_by chain of {runs['chain_by'][0].n:,} links: per link",
            f"{Summary(per('chain_by')).cell(ms)} = {link / rtt:.1f}x NOTIFY",
        ],
        [
            f"100 chains of {runs['chains'][0].n // 100:,} links in parallel",
            f"{Summary(rates('chains')).cell(rate)} links/s",
        ],
    ]
    table = benchlib.markdown_table(["measurement (one node, concurrency 50)", "result (median, range)"], rows)
    others = [r.others for kind in runs.values() for r in kind]
    return table + benchlib.background_note([], others)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = benchlib.argument_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=5_000, help="plain jobs, small-workflow steps, chain links")
    parser.add_argument("--hops", type=int, default=500, help="steps of the sequential workflow and chain_by chain")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the median is shown (%(default)s)")
    benchlib.Quiet().add_arguments(parser)
    args = parser.parse_args(argv)
    benchlib.engine_of(args.url)
    return args


async def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement `--repeat` times, interleaved, and print the table."""
    args = parse_args(argv)
    info = await benchlib.describe(args.url)
    print(f"# Baton hop benchmark ({info['engine']}, {args.jobs:,} jobs, {args.hops:,} hops)\n")
    benchlib.print_environment(info)
    quiet = benchlib.Quiet.from_args(args)
    res = Results()
    kinds = ["plain", "small", "sequential", "chain_by", "chains"]
    for r in range(1, args.repeat + 1):
        res.rtt.append(await benchlib.notify_rtt(args.url))
        for kind in kinds:
            run, _ = await benchlib.measure(
                lambda k=kind: run_kind(args.url, k, args.jobs, args.hops), lambda x: x.others, quiet, kind
            )
            res.runs.setdefault(kind, []).append(run)
            print(
                f"[run {r}/{args.repeat}] {kind}: {run.n:,} in {run.seconds:.3f} s = {rate(run.n / run.seconds)}/s; "
                f"other processes' CPU {benchlib.pct(run.others)}",
                flush=True,
            )
    print()
    print(report(res))
    return 0


if __name__ == "__main__":
    benchlib.quiet()
    raise SystemExit(asyncio.run(main()))
