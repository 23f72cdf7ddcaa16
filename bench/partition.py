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
    .venv/bin/python bench/partition.py --no-spread          # only the issue's scenario
    .venv/bin/python bench/partition.py --jobs 40 --sleep 3 --freeze 12 --runs 3

Each engine runs the issue's scenario (every job works 5 s) and a variant whose work is spread
from 0.5 to 5 s, so that some jobs reach their side effect after the cut but before the lapse
(those run twice with or without the guard: their acks cannot be written). Prints the
before/after figures and writes them to bench/results/partition-latest.md. The exit status is 1
if a job was lost or completed twice, or if, with the guard, a given-up attempt reached its side
effect or a job ran twice without its first side effect preceding the lapse.
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
    parser.add_argument(
        "--spread-from",
        type=float,
        default=0.5,
        help="also run a variant whose jobs' work is spread evenly from this to --sleep (s); some jobs then "
        "reach their side effect between the cut and the lapse",
    )
    parser.add_argument("--no-spread", action="store_true", help="skip the spread variant")
    parser.add_argument("--freeze", type=float, default=8.0, help="how long the node is cut off (s)")
    parser.add_argument("--runs", type=int, default=1, help="runs of each variant")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="baton-partition-"))
    started = datetime.now(UTC)
    engines = ["postgres", "sqlite"] if args.engine == "both" else [args.engine]
    spreads: list[float | None] = [None] if args.no_spread else [None, args.spread_from]
    sections: list[str] = []
    bad = False
    for engine in engines:
        info = await benchlib.describe(harness.pg.server_url() if engine == "postgres" else f"sqlite:///{work}/x.db")
        for spread in spreads:
            columns: list[tuple[str, dict[str, Any]]] = []
            for run in range(1, args.runs + 1):
                for guard, label in ((False, "before (lease_guard=False)"), (True, "after (lease guard on)")):
                    config = PartitionConfig(
                        jobs=args.jobs, sleep=args.sleep, sleep_min=spread, freeze=args.freeze, lease_guard=guard
                    )
                    name = f"{engine}-{'spread' if spread is not None else 'uniform'}-{'after' if guard else 'before'}"
                    figures = await run_one(engine, config, work, f"{name}-{run}")
                    columns.append((label if args.runs == 1 else f"{label}, run {run}", figures))
                    bad = bad or not acceptable(figures, guard)
            sections.append(render_section(engine, spread, columns, info, args))
    report = render(sections, started, args)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    say(f"wrote {args.out}")
    return 1 if bad else 0


TWICE = "jobs run twice (side effect written twice)"
BEFORE_LAPSE = "held attempts' side effects before the lapse"
AFTER_LAPSE = "held attempts' side effects after the lapse"


def acceptable(figures: dict[str, Any], guard: bool) -> bool:
    """Nothing lost or completed twice; with the guard, no side effect of a given-up attempt,
    and no job run twice but those whose side effect came before the lapse."""
    if figures["jobs lost (not completed)"] or figures["jobs completed twice"] or not figures["settled"]:
        return False
    return not guard or (figures[AFTER_LAPSE] == 0 and figures[TWICE] <= figures[BEFORE_LAPSE])


def render_section(
    engine: str, spread: float | None, columns: list[tuple[str, dict[str, Any]]], info: dict[str, str], args: Any
) -> str:
    keys = list(columns[0][1])
    rows = [[key, *(str(figures.get(key, "")) for _, figures in columns)] for key in keys]
    before = [str(f[TWICE]) for label, f in columns if label.startswith("before")]
    after = [str(f[TWICE]) for label, f in columns if label.startswith("after")]
    cut = (
        f"node-a reaches PostgreSQL through a TCP proxy frozen for {args.freeze:g} s (sockets open, no byte passing)"
        if engine == "postgres"
        else f"another process holds the SQLite write lock for {args.freeze:g} s (every node is cut off)"
    )
    if spread is None:
        title, work = f"{engine}: every job works {args.sleep:g} s", f"every job works {args.sleep:g} s"
    else:
        title = f"{engine}: work spread from {spread:g} to {args.sleep:g} s"
        work = (
            f"the jobs' work is spread evenly from {spread:g} to {args.sleep:g} s, so some reach their side effect "
            "after the cut but before the lapse: their acks cannot be written, they are rescued and run again, "
            "with or without the guard"
        )
    lines = [
        f"## {title}",
        "",
        f"{cut}; {work}. **Jobs run twice (side effect written twice): before {', '.join(before)} of "
        f"{args.jobs}; after {', '.join(after)} of {args.jobs}.**",
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
        f"the database for {args.freeze:g} s; each job works (sleeps), then writes a side-effect row outside "
        "Baton's database. Half the jobs are async workers, half sync workers polling "
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
