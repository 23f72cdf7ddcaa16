"""CPU-bound jobs: the thread executor against the process executor.

Each job runs a pure-Python loop (calibrated to `--job-ms` milliseconds on this machine, 30 by
default). One node runs `--jobs` of them (200) at queue concurrency `--concurrency` (4), once
with `executor="thread"` (the GIL lets one job compute at a time) and once with
`executor="process"` and `process_pool_size=--pool` (2). Both runs first warm up (one job per
slot, so the process run's children are started and have imported the worker), then time the
insert of all jobs to the last one `completed` in the database; jobs/s and the ratio
process/thread are the figures. The time a fresh child takes to run its first job (process
start, imports) is reported apart.

Usage:
    .venv/bin/python bench/cpu_executor.py                         # PostgreSQL at 127.0.0.1:5432
    .venv/bin/python bench/cpu_executor.py --repeat 3 --write bench/results/cpu-executor-latest.md
    .venv/bin/python bench/cpu_executor.py --url sqlite:////tmp/bench/bench.db

Every figure is the median of `--repeat` runs, with the range in brackets. The worker is
defined in this script: the children ("spawn") import it from the script re-run as
`__mp_main__`, which is what a user's script with a process worker goes through too.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
from benchlib import Summary, now, rate, secs

import baton

QUEUE = "cpu"
WORKER = "bench.burn"
EXECUTORS = ("thread", "process")


def burn(job: baton.Job) -> int:
    """The CPU-bound job: a pure-Python loop of `n` steps."""
    total = 0
    for i in range(job.args["n"]):
        total += i * i % 7
    return total


def calibrate(job_ms: float) -> int:
    """Loop steps that take about `job_ms` milliseconds here (best of 5, run in this process)."""
    probe = 200_000
    job = baton.Job(0, "executing", QUEUE, WORKER, {"n": probe}, {}, [], [], 1, 1, 0)
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        burn(job)
        best = min(best, time.perf_counter() - t0)
    return max(1, int(probe * job_ms / 1000 / best))


def _children_cpu() -> float:
    """utime + stime (seconds) of this process's live child processes (the worker processes)."""
    me, total = str(os.getpid()), 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == me:  # ppid
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class Meter(benchlib.CpuMeter):
    """`CpuMeter` that counts the worker processes as the benchmark's own CPU, not as others'."""

    @staticmethod
    def _own_cpu() -> float:
        return benchlib.CpuMeter._own_cpu() + _children_cpu()


@dataclass(slots=True)
class Run:
    """One timed run of one executor."""

    executor: str
    jobs: int
    seconds: float
    first_job: float  # warm-up: insert to the first job completed (children start here)
    cpu: float  # CPU seconds of the node process and its children during the timed run
    others: float = math.nan

    @property
    def per_second(self) -> float:
        return self.jobs / self.seconds


async def run_once(base_url: str, executor: str, jobs: int, concurrency: int, pool: int, steps: int) -> Run:
    """Warm up, then time `jobs` CPU-bound jobs on one node with `executor`."""
    async with benchlib.fresh_database(base_url) as url:
        app = baton.Baton(
            url,
            queues={QUEUE: concurrency},
            plugins=[baton.plugins.Stager()],
            log_events=False,
            process_pool_size=pool,
        )
        worker = app.worker(name=WORKER, queue=QUEUE, executor=executor)(burn)

        async def completed(n: int) -> bool:
            return (await app.count_jobs(QUEUE)).get("completed", 0) >= n

        meter = Meter(url)
        async with app:
            t0 = now()
            await app.insert(worker.new({"n": steps}))
            await benchlib.wait_until(functools.partial(completed, 1), interval=0.005)
            first = now() - t0
            await app.insert_all([worker.new({"n": steps}) for _ in range(concurrency)])
            await benchlib.wait_until(functools.partial(completed, 1 + concurrency), interval=0.005)
            await meter.start()
            cpu0 = Meter._own_cpu()
            t0 = now()
            await app.insert_all([worker.new({"n": steps}) for _ in range(jobs)])
            await benchlib.wait_until(functools.partial(completed, 1 + concurrency + jobs), interval=0.005)
            seconds = now() - t0
            cpu = Meter._own_cpu() - cpu0
            await meter.stop()
            counts = await app.count_jobs(QUEUE)
        await app.close()
    if counts.get("completed", 0) != 1 + concurrency + jobs:
        raise SystemExit(f"{executor}: not every job completed: {counts}")
    return Run(executor, jobs, seconds, first, cpu, meter.others)


def report(
    runs: dict[str, list[Run]], before: Sequence[float], args: argparse.Namespace, steps: int, job_ms: float
) -> str:
    """The results table and the ratio."""
    rows = []
    for executor in EXECUTORS:
        rs = runs.get(executor, [])
        if not rs:
            continue
        detail = f"{args.jobs} jobs in {Summary([r.seconds for r in rs]).cell(secs)}; "
        detail += f"CPU used {Summary([r.cpu / r.seconds for r in rs]).cell(lambda v: f'{v:.2f}')} cores; "
        detail += f"first job on a fresh node {Summary([r.first_job for r in rs]).cell(secs)}"
        label = f"{executor} executor" + (f", pool of {args.pool}" if executor == "process" else "")
        rows.append([label, Summary([r.per_second for r in rs]).cell(rate) + " jobs/s", detail])
    ratios = [p.per_second / t.per_second for t, p in zip(runs["thread"], runs["process"], strict=False)]
    if ratios:
        rows.append(
            [
                "process / thread",
                f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}..{max(ratios):.2f})",
                "ratio of the jobs/s of the runs made one after the other",
            ]
        )
    table = benchlib.markdown_table(["executor", "jobs/s (median, range)", "detail"], rows)
    table += (
        f"\n\nOne job: a pure-Python loop of {steps:,} steps, {job_ms:.1f} ms alone in the benchmark process; "
        f"{args.jobs} jobs at queue concurrency {args.concurrency}, median of {args.repeat} runs."
    )
    during = [r.others for rs in runs.values() for r in rs]
    table += benchlib.background_note(before, during)
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = benchlib.argument_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=200, help="timed jobs per run (%(default)s)")
    parser.add_argument("--job-ms", type=float, default=30.0, help="CPU time of one job, milliseconds (%(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="queue concurrency (%(default)s)")
    parser.add_argument("--pool", type=int, default=2, help="process_pool_size of the process run (%(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per executor; the median is shown (%(default)s)")
    parser.add_argument("--write", type=Path, help="also write the report (Markdown) to this file")
    benchlib.Quiet().add_arguments(parser)
    args = parser.parse_args(argv)
    if min(args.jobs, args.concurrency, args.pool, args.repeat) < 1 or args.job_ms <= 0:
        parser.error("--jobs, --job-ms, --concurrency, --pool and --repeat must be positive")
    benchlib.engine_of(args.url)
    return args


async def main(argv: Sequence[str] | None = None) -> int:
    """Run both executors `--repeat` times, alternating, and print (and write) the report."""
    args = parse_args(argv)
    benchlib.quiet()
    info = await benchlib.describe(args.url)
    steps = calibrate(args.job_ms)
    job_ms = calibrate_ms(steps)
    quiet = benchlib.Quiet.from_args(args)
    runs: dict[str, list[Run]] = {e: [] for e in EXECUTORS}
    before: list[float] = []
    lines = [f"# CPU-bound jobs: thread vs process executor ({info['engine']})", ""]
    print("\n".join(lines))
    benchlib.print_environment(info)
    for r in range(1, args.repeat + 1):
        for executor in EXECUTORS:
            run, background = await benchlib.measure(
                functools.partial(run_once, args.url, executor, args.jobs, args.concurrency, args.pool, steps),
                lambda x: x.others,
                quiet,
                executor,
            )
            before.append(background)
            runs[executor].append(run)
            print(
                f"[run {r}/{args.repeat}] {executor}: {rate(run.per_second)} jobs/s ({secs(run.seconds)}), "
                f"{run.cpu / run.seconds:.2f} cores busy; other processes' CPU {benchlib.pct(run.others)}",
                flush=True,
            )
    table = report(runs, before, args, steps, job_ms)
    print()
    print(table)
    if args.write is not None:
        env = "\n".join(f"- {k}: {v}" for k, v in info.items())
        command = "bench/cpu_executor.py " + " ".join(sys.argv[1:])
        head = "\n".join(lines) + f"\nCommand: `{command.strip()}`\n\n## Environment\n{env}\n\n"
        args.write.write_text(head + table + "\n")
    return 0


def calibrate_ms(steps: int) -> float:
    """Milliseconds one job of `steps` takes in this process (best of 5: the quiet-machine figure)."""
    job = baton.Job(0, "executing", QUEUE, WORKER, {"n": steps}, {}, [], [], 1, 1, 0)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        burn(job)
        times.append(time.perf_counter() - t0)
    return min(times) * 1000


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
