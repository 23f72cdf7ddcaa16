"""Baton workflow benchmark: one large workflow, inserted with one `insert_workflow` call and run
by one node.

Shapes:
  fanout (default): a root step, `--steps - 2` parallel steps that each depend on the root, and
      one fan-in step that depends on all of them (10 000 steps: 1 + 9 998 + 1);
  chain: `--steps` steps, each depending on the one before (2 000 by default for this shape);
  map: a root step, a graft step whose worker returns `Graft.map` over `--steps - 3` items (the
      grafted steps are inserted by the graft's ack, at run time) and a fan-in step that depends
      on the graft, so on every grafted step (10 003 steps: 1 + 1 + 10 000 + 1).

Printed per run (fresh database each), median over `--repeat`:
  - validate: `Workflow.plan()` alone (insert_workflow runs it again inside);
  - insert: the one `insert_workflow` call (validation + one transaction);
  - run: steps/s from the start of the node to the `on_workflow_finished` callback;
  - finish lag: from the last step's end in the worker (its ("baton","job","stop") event, which
    fires just before its ack is queued) to the finished callback — the ack, the release/resolve
    work and the completion claim of that last step;
  - map only, graft: from the graft worker's return to the first grafted step starting — the
    graft's ack inserting every grafted step (one round trip per 5 000 rows), then a fetch.

Usage:
    .venv/bin/python bench/workflow.py                              # PostgreSQL, fan-out of 10 000
    .venv/bin/python bench/workflow.py --shape chain                # 2 000-step chain
    .venv/bin/python bench/workflow.py --shape map                  # graft of 10 000 + fan-in
    .venv/bin/python bench/workflow.py --url sqlite:///bench/results/bench.db --repeat 1
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
from benchlib import Summary, ms, now, rate, secs

import baton
from baton import telemetry

QUEUE = "bench"
WORKER = "bench.step"
GRAFT = "bench.graft"
START = ("baton", "job", "start")
STOP = ("baton", "job", "stop")
EXCEPTION = ("baton", "job", "exception")
DEFAULT_STEPS = {"fanout": 10_000, "chain": 2_000, "map": 10_003}


def make_app(url: str, concurrency: int | None = None) -> baton.Baton:
    """An app with only the Stager plugin, no event logging, and the no-op step worker."""
    queues = {QUEUE: concurrency} if concurrency is not None else None
    app = baton.Baton(url, queues=queues, plugins=[baton.plugins.Stager()], log_events=False)

    @app.worker(name=WORKER, queue=QUEUE)
    async def step(job: baton.Job) -> None:
        return None

    @app.worker(name=GRAFT, queue=QUEUE)
    async def graft(job: baton.Job) -> baton.Graft:
        return baton.Graft.map(step, [{"i": i} for i in range(job.args["n"])])

    return app


def build(app: baton.Baton, shape: str, steps: int) -> tuple[baton.Workflow, str]:
    """The workflow to run and the name of its last step."""
    wf = baton.Workflow(label=f"bench-{shape}-{steps}")
    if shape == "chain":
        previous: list[str] = []
        for i in range(steps):
            name = f"s{i}"
            wf.add(name, app.new(WORKER, {"i": i}), deps=previous)
            previous = [name]
        return wf, previous[0]
    wf.add("root", app.new(WORKER, {"i": 0}))
    if shape == "map":
        wf.add_graft("process", app.new(GRAFT, {"n": steps - 3}), deps=["root"])
        wf.add("fanin", app.new(WORKER, {"i": steps - 1}), deps=["process"])
        return wf, "fanin"
    middle = [f"m{i}" for i in range(steps - 2)]
    for i, name in enumerate(middle, start=1):
        wf.add(name, app.new(WORKER, {"i": i}), deps=["root"])
    wf.add("fanin", app.new(WORKER, {"i": steps - 1}), deps=middle)
    return wf, "fanin"


@dataclass(slots=True)
class WorkflowRun:
    """One workflow run's timings (seconds)."""

    steps: int
    validate: float
    insert: float
    run: float
    last_stop: float
    finish_lag: float
    status: str
    errors: int
    graft: float = math.nan  # map: graft worker return to the first grafted step's start
    background: float = math.nan  # other processes' CPU share just before the run
    others: float = math.nan  # ... and during it

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.run


async def run_once(base_url: str, shape: str, steps: int, concurrency: int) -> WorkflowRun:
    """Insert the workflow into a fresh database, then time one node running it to the end."""
    async with benchlib.fresh_database(base_url) as url:
        app = make_app(url, concurrency)
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[tuple[float, dict[str, Any]]] = loop.create_future()
        marks = {"last_stop": float("nan"), "stops": 0, "errors": 0, "graft_stop": math.nan, "grafted": math.nan}
        try:
            wf, last = build(app, shape, steps)
            await app.count_jobs()  # open the pool outside the timing
            t0 = now()
            wf.plan()
            t1 = now()
            wid = await app.insert_workflow(wf)
            t2 = now()

            def on_finished(event: dict[str, Any]) -> None:
                if event.get("workflow_id") == wid and not finished.done():
                    finished.set_result((now(), event))

            def on_end(event: Sequence[str], measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
                marks["stops"] += tuple(event) != START
                if tuple(event) == EXCEPTION:
                    marks["errors"] += 1
                job = metadata.get("job")
                if job is not None and job.step == last:
                    marks["last_stop"] = now()
                if job is not None and job.step == "process" and tuple(event) == STOP:
                    marks["graft_stop"] = now()
                started = tuple(event) == START and job is not None and (job.step or "").startswith("process.")
                if started and math.isnan(marks["grafted"]):
                    marks["grafted"] = now()

            app.on_workflow_finished(on_finished)
            handler = f"bench-workflow-{id(app)}"
            telemetry.attach_many(handler, [START, STOP, EXCEPTION], on_end)
            meter = benchlib.CpuMeter(url)
            try:
                await meter.start()
                t3 = now()
                async with app:
                    t4, event = await finished
                    await meter.stop()
            finally:
                telemetry.detach(handler)
        finally:
            await app.close()
    return WorkflowRun(
        steps=steps,
        validate=t1 - t0,
        insert=t2 - t1,
        run=t4 - t3,
        last_stop=marks["last_stop"] - t3,
        finish_lag=t4 - marks["last_stop"],
        status=str(event.get("status")),
        errors=int(marks["errors"]),
        graft=marks["grafted"] - marks["graft_stop"],
        others=meter.others,
    )


def report(runs: Sequence[WorkflowRun], shape: str, concurrency: int) -> str:
    """The runs as one Markdown table (median of the repeats, range in brackets)."""
    steps = runs[0].steps
    inserted = 3 if shape == "map" else steps  # a map inserts root, graft and fan-in; the ack the rest
    statuses = sorted({r.status for r in runs})
    errors = sum(r.errors for r in runs)
    rows = [
        [f"validate (Workflow.plan) of {inserted:,} steps", Summary([r.validate for r in runs]).cell(secs)],
        [
            f"insert_workflow of {inserted:,} steps (one call, includes validation)",
            Summary([r.insert for r in runs]).cell(secs)
            + f" = {Summary([inserted / r.insert for r in runs]).cell(rate)} steps/s",
        ],
        [
            f"run at concurrency {concurrency}: node start to finished event",
            Summary([r.run for r in runs]).cell(secs) + f" = {Summary([r.steps_per_second for r in runs]).cell(rate)}"
            " steps/s",
        ],
        ["last step's worker return, from node start", Summary([r.last_stop for r in runs]).cell(secs)],
        ["last step's end to finished event (ack + resolve + claim)", Summary([r.finish_lag for r in runs]).cell(ms)],
        ["finished status", ", ".join(statuses) + (f" ({errors} step errors)" if errors else "")],
    ]
    if shape == "map":
        rows.insert(
            2,
            [
                f"graft: worker return to first grafted step start ({steps - 3:,} steps inserted by the ack)",
                Summary([r.graft for r in runs]).cell(ms),
            ],
        )
    table = benchlib.markdown_table([f"workflow ({shape})", "result (median, range)"], rows)
    table += benchlib.background_note([r.background for r in runs], [r.others for r in runs])
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = benchlib.argument_parser(__doc__)
    parser.add_argument("--shape", choices=sorted(DEFAULT_STEPS), default="fanout", help="graph shape (%(default)s)")
    parser.add_argument(
        "--steps", type=int, default=None, help="steps in the workflow (fanout: 10000, chain: 2000, map: 10003)"
    )
    parser.add_argument("--concurrency", type=int, default=50, help="queue concurrency of the node (%(default)s)")
    benchlib.Quiet().add_arguments(parser)
    parser.add_argument("--repeat", type=int, default=3, help="runs; the median is shown (%(default)s)")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = DEFAULT_STEPS[args.shape]
    if args.steps < (3 if args.shape in ("fanout", "map") else 1) or args.concurrency < 1 or args.repeat < 1:
        parser.error("--steps (fanout needs >= 3), --concurrency and --repeat must be positive")
    benchlib.engine_of(args.url)
    return args


async def main(argv: Sequence[str] | None = None) -> int:
    """Run the workflow `--repeat` times and print the table."""
    args = parse_args(argv)
    info = await benchlib.describe(args.url)
    print(f"# Baton workflow benchmark ({info['engine']}, {args.shape}, {args.steps:,} steps)\n")
    benchlib.print_environment(info)
    runs: list[WorkflowRun] = []
    quiet = benchlib.Quiet.from_args(args)
    for r in range(1, args.repeat + 1):
        run, before = await benchlib.measure(
            lambda: run_once(args.url, args.shape, args.steps, args.concurrency), lambda x: x.others, quiet, "workflow"
        )
        run.background = before
        runs.append(run)
        print(
            f"[run {r}/{args.repeat}] insert {secs(run.insert)}, run {secs(run.run)} "
            f"({rate(run.steps_per_second)} steps/s), finish lag {ms(run.finish_lag)}, {run.status}; "
            f"other processes' CPU {benchlib.pct(run.others)}",
            flush=True,
        )
    print()
    print(report(runs, args.shape, args.concurrency))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
