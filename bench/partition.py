"""Partition run (issue #20, docs/lease.md): how many jobs run twice when one node is cut off
from the database, before and after the lease guard, on PostgreSQL and on SQLite.

Three worker nodes (real processes, stale_after 2 s, refresh_interval 0.5 s, a Lifeline sweep
every second); node-a reaches PostgreSQL through a TCP proxy this script runs, the others
directly. node-a takes all the jobs (each sleeps, then writes a side-effect row outside the
database), then the proxy freezes: connections stay open, nothing passes. The Lifeline of
node-b/node-c rescues node-a's jobs and runs them; the proxy thaws. "Before" runs node-a with
`Baton(lease_guard=False)` (the behaviour the issue reported), "after" with the default
guard. On SQLite, where there is no network to cut, the partition is another process holding
the write lock for the same time (every node is cut off then, not only node-a). The scenario is
tests/faults/partition_scenario.py (tests/faults/test_partition.py runs it too).

    .venv/bin/python bench/partition.py                        # 20 jobs, 5 s each, 8 s freeze
    .venv/bin/python bench/partition.py --engine postgres
    .venv/bin/python bench/partition.py --jobs 40 --sleep 3 --freeze 12 --runs 3

Prints the before/after figures and writes them to bench/results/partition-latest.md. The
exit status is 1 if a job was lost or completed twice, or (after) if a job ran twice.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "faults"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import benchlib  # noqa: E402
import harness  # noqa: E402
from partition_node import REFRESH_INTERVAL, RESCUE_INTERVAL, STALE_AFTER  # noqa: E402
from partition_scenario import PartitionConfig, run_partition  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "partition-latest.md"


def say(line: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {line}", file=sys.stderr, flush=True)


async def run_one(engine: str, config: PartitionConfig, work: Path, name: str) -> dict[str, Any]:
    db = await harness.create_fault_database(engine, work / name)
    try:
        say(f"{name}: {config.jobs} jobs of {config.sleep:g}s, proxy frozen {config.freeze:g}s")
        result = await run_partition(db, config, work / name / "logs", say=lambda line: say(f"{name}: {line}"))
        say(f"{name}: {result.figures['jobs run twice (side effect written twice)']} jobs ran twice")
        return result.figures
    finally:
        harness.drop_fault_database(db)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--sleep", type=float, default=5.0, help="each job's work before its side effect (s)")
    parser.add_argument("--freeze", type=float, default=8.0, help="how long the proxy holds every byte (s)")
    parser.add_argument("--runs", type=int, default=1, help="runs of each variant")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="baton-partition-"))
    started = datetime.now(UTC)
    engines = ["postgres", "sqlite"] if args.engine == "both" else [args.engine]
    sections: list[str] = []
    everything: list[tuple[str, dict[str, Any]]] = []
    for engine in engines:
        columns: list[tuple[str, dict[str, Any]]] = []
        for run in range(1, args.runs + 1):
            for guard, label in ((False, "before (lease_guard=False)"), (True, "after (lease guard on)")):
                config = PartitionConfig(jobs=args.jobs, sleep=args.sleep, freeze=args.freeze, lease_guard=guard)
                name = f"{engine}-{'after' if guard else 'before'}-{run}"
                figures = await run_one(engine, config, work, name)
                columns.append((label if args.runs == 1 else f"{label}, run {run}", figures))
        info = await benchlib.describe(harness.pg.server_url() if engine == "postgres" else f"sqlite:///{work}/x.db")
        sections.append(render_engine(engine, columns, info, args))
        everything += columns
    report = render(sections, started, args)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    say(f"wrote {args.out}")
    bad = False
    for label, figures in everything:
        if figures["jobs lost (not completed)"] or figures["jobs completed twice"] or not figures["settled"]:
            bad = True
        if label.startswith("after") and figures["jobs run twice (side effect written twice)"]:
            bad = True
    return 1 if bad else 0


def render_engine(engine: str, columns: list[tuple[str, dict[str, Any]]], info: dict[str, str], args: Any) -> str:
    keys = list(columns[0][1])
    rows = [[key, *(str(figures.get(key, "")) for _, figures in columns)] for key in keys]
    twice = "jobs run twice (side effect written twice)"
    before = [str(f[twice]) for label, f in columns if label.startswith("before")]
    after = [str(f[twice]) for label, f in columns if label.startswith("after")]
    cut = (
        f"node-a reaches PostgreSQL through a TCP proxy frozen for {args.freeze:g} s (sockets open, no byte passing)"
        if engine == "postgres"
        else f"another process holds the SQLite write lock for {args.freeze:g} s (every node is cut off)"
    )
    lines = [
        f"## {engine}",
        "",
        f"{cut}. **Jobs run twice (side effect written twice): before {', '.join(before)} of {args.jobs}; "
        f"after {', '.join(after)} of {args.jobs}.**",
        "",
        *[f"- {key}: {value}" for key, value in info.items() if key != "engine"],
        "",
        benchlib.markdown_table(["figure", *(label for label, _ in columns)], rows),
        "",
    ]
    return "\n".join(lines)


def render(sections: list[str], started: datetime, args: Any) -> str:
    lines = [
        "# Partition report",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC by `bench/partition.py` (issue #20, docs/lease.md). Three worker "
        f"processes (refresh_interval={REFRESH_INTERVAL:g}, stale_after={STALE_AFTER:g}, "
        f"Lifeline(rescue_interval={RESCUE_INTERVAL:g})); node-a runs all {args.jobs} jobs when it is cut off from "
        f"the database for {args.freeze:g} s; each job sleeps {args.sleep:g} s, then writes a side-effect row "
        "outside Baton's database. Half the jobs are async workers, half sync workers polling "
        "`job.raise_if_cancelled()`. Each run uses a fresh database.",
        "",
        "The lapse is node-a's `lease_lost` event with the guard; without it, the moment node-a's producer rows "
        "went stale (its last renewal before the cut + stale_after), from which the Lifeline may rescue. The "
        "held attempts are those node-a was executing when it was cut off. Jobs come back either through the "
        "Lifeline of another node (`orphaned`) or, when node-a regains its lease before a sweep got to them, "
        "handed back by node-a itself (`lease_lost`).",
        "",
        *sections,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
