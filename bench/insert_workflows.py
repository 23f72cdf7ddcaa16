"""Baton bulk workflow insert benchmark: many small workflows inserted one `insert_workflow`
call each, against one `insert_workflows` call for all of them (issue #19).

Each workflow has `--width + 2` steps: a root, `--width` parallel steps that depend on it and a
fan-in that depends on all of them (10 steps by default: 8 edges from the root, 8 into the
fan-in). Each mode inserts the same `--workflows` workflows (2 000 by default, 20 000 steps)
into its own fresh database; the workflows are built before the clock starts, so the timings
cover validation (`Workflow.plan()` and the worker check) and the writes, to the commit.

Printed per mode, median over `--repeat` (range in brackets):
  - steps/s: steps inserted divided by the wall time of the inserts;
  - validate: the bulk call's validation alone (every workflow planned, before any write);
  - PostgreSQL CPU: CPU time of the server backends during the inserts, showing how much of the
    time the server itself needs.

Usage:
    .venv/bin/python bench/insert_workflows.py                              # PostgreSQL
    .venv/bin/python bench/insert_workflows.py --workflows 600 --repeat 1
    .venv/bin/python bench/insert_workflows.py --url sqlite:////tmp/bench/bench.db
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
from benchlib import Summary, now, rate, secs

import baton

QUEUE = "bench"
WORKER = "bench.step"
MODES = ("one-by-one", "bulk")


def make_app(url: str) -> baton.Baton:
    """An app with no plugins and no event logging, and the no-op step worker (never run)."""
    app = baton.Baton(url, plugins=[], log_events=False)

    @app.worker(name=WORKER, queue=QUEUE)
    async def step(job: baton.Job) -> None:
        return None

    return app


def build(app: baton.Baton, workflows: int, width: int) -> list[baton.Workflow]:
    """`workflows` workflows of a root, `width` parallel steps and a fan-in, each with its own
    label and context."""
    out = []
    middle = [f"m{i}" for i in range(width)]
    for w in range(workflows):
        wf = baton.Workflow(label=f"bench-{w}", context={"n": w})
        wf.add("root", app.new(WORKER, {"w": w}))
        for i, name in enumerate(middle):
            wf.add(name, app.new(WORKER, {"w": w, "i": i}), deps=["root"])
        wf.add("fanin", app.new(WORKER, {"w": w}), deps=middle)
        out.append(wf)
    return out


@dataclass(slots=True)
class InsertRun:
    """One mode's inserts in one fresh database."""

    mode: str
    steps: int
    seconds: float
    validate: float = math.nan  # bulk: the validation alone (before any write)
    server_cpu: float = math.nan  # CPU seconds of the PostgreSQL backends during the inserts
    background: float = math.nan
    others: float = math.nan

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds


async def run_once(base_url: str, mode: str, workflows: int, width: int) -> InsertRun:
    """Insert the workflows into a fresh database, one call each or in one call."""
    async with benchlib.fresh_database(base_url) as url:
        app = make_app(url)
        try:
            wfs = build(app, workflows, width)
            steps = sum(len(wf) for wf in wfs)
            await app.count_jobs()  # open the pool outside the timing
            validate = math.nan
            if mode == "bulk":
                t = now()
                app._plan_all(wfs)  # the validation alone, timed apart (insert_workflows runs it again)
                validate = now() - t
            meter = benchlib.CpuMeter(url)
            await meter.start()
            t0 = now()
            if mode == "bulk":
                wids = await app.insert_workflows(wfs)
            else:
                wids = [await app.insert_workflow(wf) for wf in wfs]
            t1 = now()
            after = await meter._pg_times()
            await meter.stop()
            counts = await app.count_jobs()
            if len(wids) != workflows or sum(counts.values()) != steps:
                raise SystemExit(f"{mode}: inserted {len(wids)} workflows, {counts} jobs; expected {steps} steps")
        finally:
            await app.close()
    server_cpu = sum(t - meter._pg.get(pid, 0.0) for pid, t in after.items()) if after else math.nan
    return InsertRun(mode, steps, t1 - t0, validate, server_cpu, others=meter.others)


def report(runs: Sequence[InsertRun], workflows: int, width: int) -> str:
    """Both modes as one Markdown table (median of the repeats, range in brackets)."""
    rows = []
    medians = {}
    for mode in MODES:
        mine = [r for r in runs if r.mode == mode]
        if not mine:
            continue
        medians[mode] = Summary([r.steps_per_second for r in mine]).median
        call = "`insert_workflow` per workflow" if mode == "one-by-one" else "one `insert_workflows` call"
        cpu = Summary([r.server_cpu for r in mine])
        rows.append(
            [
                call,
                Summary([r.seconds for r in mine]).cell(secs),
                Summary([r.steps_per_second for r in mine]).cell(rate),
                Summary([r.validate for r in mine]).cell(secs) if mode == "bulk" else "(inside)",
                "n/a" if math.isnan(cpu.median) else cpu.cell(secs),
            ]
        )
    steps = runs[0].steps
    header = [
        f"{workflows:,} workflows x {width + 2} steps ({steps:,} steps)",
        "wall time",
        "steps/s",
        "validation alone",
        "PostgreSQL CPU",
    ]
    table = benchlib.markdown_table(header, rows)
    if len(medians) == 2:
        table += f"\n\nBulk / one-by-one: {medians['bulk'] / medians['one-by-one']:.1f}x (medians)."
    table += benchlib.background_note([r.background for r in runs], [r.others for r in runs])
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = benchlib.argument_parser(__doc__)
    parser.add_argument("--workflows", type=int, default=2_000, help="workflows inserted (%(default)s)")
    parser.add_argument("--width", type=int, default=8, help="parallel steps per workflow (%(default)s)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: one-by-one,bulk (%(default)s)")
    benchlib.Quiet().add_arguments(parser)
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode; the median is shown (%(default)s)")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in MODES for m in args.modes):
        parser.error(f"--modes takes {', '.join(MODES)}")
    if args.workflows < 1 or args.width < 1 or args.repeat < 1:
        parser.error("--workflows, --width and --repeat must be positive")
    benchlib.engine_of(args.url)
    return args


async def main(argv: Sequence[str] | None = None) -> int:
    """Run each mode `--repeat` times (alternating) and print the table."""
    args = parse_args(argv)
    info = await benchlib.describe(args.url)
    steps = args.workflows * (args.width + 2)
    print(f"# Baton bulk workflow insert benchmark ({info['engine']}, {args.workflows:,} workflows, {steps:,} steps)\n")
    benchlib.print_environment(info)
    quiet = benchlib.Quiet.from_args(args)
    runs: list[InsertRun] = []
    for r in range(1, args.repeat + 1):
        for mode in args.modes:
            run, before = await benchlib.measure(
                lambda mode=mode: run_once(args.url, mode, args.workflows, args.width), lambda x: x.others, quiet, mode
            )
            run.background = before
            runs.append(run)
            print(
                f"[run {r}/{args.repeat}] {mode}: {secs(run.seconds)} = {rate(run.steps_per_second)} steps/s; "
                f"other processes' CPU {benchlib.pct(run.others)}",
                flush=True,
            )
    print()
    print(report(runs, args.workflows, args.width))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
