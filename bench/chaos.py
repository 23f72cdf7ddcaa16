"""Chaos run: Baton's promises under kill -9, PostgreSQL restarts and retention, at full size.

Runs the scenarios of the fault-injection suite (tests/faults) with 20 000 jobs and 200
workflows each, and prints a report with figures: jobs, workflows, kills, restarts, the time
to recover (from a kill to the dead node's jobs being available again; from a PostgreSQL
restart to the first successful fetch), and the numbers that must be zero: lost jobs,
duplicated completions, duplicated announcements, workflows never announced, and violations of
any kind (every one is listed under its scenario). The report also goes to
bench/results/chaos-latest.md.

    .venv/bin/python bench/chaos.py                      # every scenario
    .venv/bin/python bench/chaos.py --engine postgres    # PostgreSQL only
    .venv/bin/python bench/chaos.py --jobs 5000 --workflows 50 --no-restarts

PostgreSQL restarts (`pg_ctlcluster restart`) need a pg_ctlcluster-managed server and a quiet
one: the script waits (polling every 30 s, up to --max-wait) until no benchmark and no pytest
session is running before it restarts anything, and skips the scenario otherwise.

The exit status is 1 when any invariant was violated.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "faults"))
sys.path.insert(0, str(ROOT / "tests"))

import harness  # noqa: E402
from harness import ChaosConfig, ChaosResult, Driver  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "chaos-latest.md"


def say(line: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {line}", file=sys.stderr, flush=True)


async def run_one(engine: str, config: ChaosConfig, work: Path, name: str) -> ChaosResult:
    """Run one scenario in a fresh database (dropped afterwards)."""
    directory = work / name
    db = await harness.create_fault_database(engine, directory)
    try:
        say(f"{name}: {config.jobs} jobs, {config.workflows} workflows on {engine}")
        started = time.monotonic()
        result = await Driver(db, config, directory, say=lambda line: say(f"{name}: {line}")).run()
        say(f"{name}: done in {time.monotonic() - started:.0f}s, {len(result.violations)} violations")
        if result.violations:
            (directory / "violations.txt").write_text("\n\n".join(result.violations))
            say(f"{name}: logs kept in {directory}")
        return result
    finally:
        harness.drop_fault_database(db)


async def environment(engine: str) -> list[str]:
    """The machine and database the figures come from (bench/benchlib.py's description)."""
    try:
        sys.path.insert(0, str(ROOT / "bench"))
        import benchlib

        url = harness.pg.server_url() if engine == "postgres" else "sqlite:////tmp/chaos-env.db"
        info = await benchlib.describe(url)
    except Exception as exc:  # the report is still worth having without it
        return [f"- environment unknown ({exc})"]
    return [f"- {key}: {value}" for key, value in info.items() if key != "engine"]


async def main(argv: list[str] | None = None) -> int:
    """Run the scenarios, print the report and write it to --out; 1 if anything was violated."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--chains", type=int, default=100, help="chain keys (6 links each)")
    parser.add_argument("--feed-seconds", type=float, default=60.0, help="insert the work over this many seconds")
    parser.add_argument("--kill-interval", type=float, default=4.0, help="seconds between kill -9s (~)")
    parser.add_argument("--no-restarts", action="store_true", help="skip the PostgreSQL restart scenario")
    parser.add_argument("--no-retention", action="store_true", help="skip the retention scenario")
    parser.add_argument("--max-wait", type=float, default=1800, help="seconds to wait for a quiet PostgreSQL")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # outages are expected here

    engines = ["postgres", "sqlite"] if args.engine == "both" else [args.engine]
    size = {
        "jobs": args.jobs,
        "workflows": args.workflows,
        "chains": args.chains,
        "feed_seconds": args.feed_seconds,
        "settle_timeout": 600,
    }
    plans: list[tuple[str, str, ChaosConfig]] = []
    for engine in engines:
        plans.append((engine, f"{engine}-kills", ChaosConfig(kill_interval=args.kill_interval, **size)))
    if not args.no_retention:
        for engine in engines:
            plans.append(
                (engine, f"{engine}-retention", ChaosConfig(kill_interval=args.kill_interval, retention=True, **size))
            )
    if "postgres" in engines and not args.no_restarts:
        restart = ChaosConfig(kill_interval=None, pg_restarts=(0.0, 3.0, 0.0), inserter=True, inserter_lanes=4, **size)
        plans.append(("postgres", "postgres-restarts", restart))

    work = Path(tempfile.mkdtemp(prefix="baton-chaos-"))
    results: list[ChaosResult] = []
    skipped: list[str] = []
    started = datetime.now(UTC)
    try:
        for engine, name, config in plans:
            if config.pg_restarts:
                cluster = harness.postgres_cluster(harness.server_port(harness.pg.server_url()))
                if cluster is None:
                    skipped.append(f"{name}: the PostgreSQL server is not managed by pg_ctlcluster")
                    continue
                if not await harness.wait_until_quiet(args.max_wait, poll=30, say=say):
                    skipped.append(f"{name}: a benchmark or test session kept using PostgreSQL")
                    continue
            results.append(await run_one(engine, config, work, name))
    finally:
        failed = any(r.violations for r in results)
        if not failed:
            shutil.rmtree(work, ignore_errors=True)

    header = [
        "# Chaos report",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC by `bench/chaos.py` (the scenarios of `tests/faults` at full size). "
        "Nodes run Stager(interval=0.2), Lifeline(rescue_interval=1), WorkflowHealth(interval=1) with "
        "refresh_interval=0.5 and stale_after=2. Each scenario uses a fresh database.",
        "",
        *await environment(engines[0]),
        "",
        _summary(results),
        "",
    ]
    text = harness.report_markdown(results, "\n".join(header))
    if skipped:
        text += "\nSkipped:\n\n" + "\n".join(f"- {s}" for s in skipped) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    say(f"report written to {args.out}")
    return 1 if failed else 0


def _summary(results: list[ChaosResult]) -> str:
    """One line per scenario with the figures that must be zero."""
    rows = [
        "| scenario | jobs | workflows | kills | PG restarts | lost | dup. completions | dup. announcements "
        "| never announced | violations |"
    ]
    rows.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        f: dict[str, Any] = r.figures
        rows.append(
            f"| {r.engine}: {harness.scenario_name(r.config)} | {f.get('jobs')} | {f.get('workflows')} "
            f"| {f.get('kills (kill -9)')} | {f.get('PostgreSQL restarts')} | {f.get('lost')} "
            f"| {f.get('duplicated completions')} | {f.get('duplicated announcements')} "
            f"| {f.get('missing announcements')} | {len(r.violations)} |"
        )
    return "\n".join(rows)


async def interruptible() -> int:
    """`main()`, cancelled cleanly (nodes killed, databases dropped) on SIGINT or SIGTERM."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await main()
    except asyncio.CancelledError:
        say("interrupted: nodes stopped, databases dropped")
        return 130


if __name__ == "__main__":
    sys.exit(asyncio.run(interruptible()))
