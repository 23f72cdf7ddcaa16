"""Shared helpers for the Baton benchmarks: a fresh database per measurement (PostgreSQL or
SQLite), percentiles and medians, Markdown tables, and a description of the machine.

Only the benchmark scripts in this directory import it; nothing here is part of Baton.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

import baton
from baton.telemetry.logging import detach_default_logger

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
"""The server the benchmarks use unless `--url` (or $BATON_BENCH_URL) says otherwise. Only
its host, port and credentials matter: each measurement runs in its own new database."""

_counter = itertools.count(1)
T = TypeVar("T")


async def notify_rtt(url: str, samples: int = 300, gap: float = 0.0) -> float:
    """Median seconds of a bare LISTEN/NOTIFY round trip: `NOTIFY` sent on one connection,
    received on another that LISTENs (asyncio psycopg connections, as a node receives them; a
    synchronous receiver measures less). NaN for SQLite. The yardstick of hops and idle
    insert-to-start latency in bench/hops.py and bench/compare.py.

    `gap` > 0 sleeps a random 0..`gap` seconds before each NOTIFY, as compare.py's latency probe
    loop does before each insert: on a virtual machine a process woken from idle pays for the
    wake-up (seen here: 0.11 ms back to back, 0.35-0.57 ms after 1-20 ms idle), so a yardstick
    for an idle queue has to be measured idle too."""
    if engine_of(url) != "postgres":
        return math.nan
    listener = await psycopg.AsyncConnection.connect(url, autocommit=True)
    sender = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        await listener.execute("LISTEN bench_rtt")
        gen = listener.notifies()
        times = []
        for _ in range(samples):
            if gap > 0:
                await asyncio.sleep(random.uniform(0, gap))
            t0 = time.perf_counter()
            await sender.execute("NOTIFY bench_rtt, 'x'")
            await asyncio.wait_for(anext(gen), 5.0)
            times.append(time.perf_counter() - t0)
        return statistics.median(times[samples // 10 :])
    finally:
        await listener.close()
        await sender.close()


def default_url() -> str:
    """$BATON_BENCH_URL, else the local PostgreSQL server."""
    return os.environ.get("BATON_BENCH_URL", DEFAULT_URL)


def argument_parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's parser (described by the first paragraph of its docstring) with `--url`:
    a PostgreSQL server, where each measurement creates its own database, or an SQLite file,
    next to which each measurement creates its own."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    parser.add_argument(
        "--url",
        default=default_url(),
        help="PostgreSQL server (a database is created per measurement) or sqlite:///file.db "
        "(files are created next to it); default $BATON_BENCH_URL or %(default)s",
    )
    return parser


def engine_of(url: str) -> str:
    """`postgres` or `sqlite`, from a database URL."""
    if url.startswith(("postgresql:", "postgres:")):
        return "postgres"
    if url.startswith("sqlite:"):
        return "sqlite"
    raise SystemExit(f"unsupported URL {url!r}: use postgresql://... or sqlite:///path/to.db")


def _sqlite_path(url: str) -> Path:
    """The file an `sqlite:` URL names (`sqlite:///rel.db`, `sqlite:////abs.db`)."""
    rest = url[len("sqlite:") :].split("?", 1)[0]
    if rest.startswith("//"):
        rest = rest[2:]
    if rest.startswith("/"):
        rest = rest[1:]
    if not rest:
        raise SystemExit(f"{url!r} names no file; use e.g. sqlite:///bench.db")
    return Path(rest)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@contextlib.asynccontextmanager
async def fresh_database(base_url: str, *, migrate: bool = True) -> AsyncIterator[str]:
    """Yield the URL of a new, empty (and migrated) database, removed again on exit.

    PostgreSQL: `CREATE DATABASE baton_bench_<pid>_<n>` on the server of `base_url`, dropped
    with `WITH (FORCE)` afterwards. SQLite: a file `<stem>-<pid>-<n>.db` next to the file the
    URL names, deleted (with its -wal/-shm files) afterwards.
    """
    n = next(_counter)
    if engine_of(base_url) == "sqlite":
        base = _sqlite_path(base_url)
        path = base.with_name(f"{base.stem}-{os.getpid()}-{n}.db").resolve()
        url = f"sqlite:///{path}"
        try:
            if migrate:
                await migrate_url(url)
            yield url
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{path}{suffix}").unlink()
        return
    name = f"baton_bench_{os.getpid()}_{n}"
    async with await psycopg.AsyncConnection.connect(base_url, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(base_url, name)
    try:
        if migrate:
            await migrate_url(url)
        yield url
    finally:
        await _drop_database(base_url, name)


async def _drop_database(base_url: str, name: str) -> None:
    """Drop a benchmark database, retrying briefly (the server may be restarting); warn rather
    than raise, so the error that ended the run is the one reported."""
    for attempt in range(10):
        try:
            async with await psycopg.AsyncConnection.connect(base_url, autocommit=True) as admin:
                await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            return
        except psycopg.Error as exc:
            if attempt == 9:
                print(f"warning: could not drop database {name} ({exc}); drop it by hand", file=sys.stderr)
                return
            await asyncio.sleep(1.0)


async def migrate_url(url: str) -> None:
    """Create Baton's tables in the database at `url`."""
    app = baton.Baton(url, plugins=[baton.plugins.Stager()], log_events=False)
    try:
        await app.migrate()
    finally:
        await app.close()


def quiet() -> None:
    """Keep Baton's default event logger out of the measurements (it is attached once per
    process by the first app built without `log_events=False`)."""
    detach_default_logger()


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (`pct` in 0..100) of a non-empty sample."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(slots=True)
class Summary:
    """Median and range of one figure over the repeats."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    def cell(self, fmt: Callable[[float], str]) -> str:
        """`median (min..max)` when there were several repeats, else the one value."""
        if len(self.values) <= 1:
            return fmt(self.median)
        return f"{fmt(self.median)} ({fmt(min(self.values))}..{fmt(max(self.values))})"


def rate(value: float) -> str:
    """A per-second rate, thousands separated."""
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


def ms(value: float) -> str:
    """Seconds shown as milliseconds."""
    return "n/a" if math.isnan(value) else f"{value * 1000:.2f} ms"


def secs(value: float) -> str:
    """Seconds, three decimals."""
    return "n/a" if math.isnan(value) else f"{value:.3f} s"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, columns padded so it also reads well in a terminal."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


# --------------------------------------------------------------------------- environment


def baton_source() -> str:
    """Where the measured Baton was imported from, with its git commit and whether that
    checkout had uncommitted changes under src/ (figures belong to one exact version)."""
    src = Path(baton.__file__).resolve().parent.parent
    where = str(src)
    try:
        rev = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return where
    state = f"{len(dirty)} uncommitted file(s) under src/" if dirty else "clean"
    return f"{where} (git {rev}, {state})"


async def describe(url: str) -> dict[str, str]:
    """The machine, Python, driver and database server the figures were measured on."""
    info = {
        "baton": baton_source(),
        "cpus": str(os.cpu_count()),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "engine": engine_of(url),
    }
    if engine_of(url) == "postgres":
        info["psycopg"] = psycopg.__version__
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            cur = await conn.execute("SELECT current_setting('server_version'), current_setting('synchronous_commit')")
            row = await cur.fetchone()
            if row is not None:
                info["server"] = f"PostgreSQL {row[0]} (synchronous_commit={row[1]})"
            info["host"] = urlsplit(url).hostname or "local socket"
    else:
        import sqlite3

        info["server"] = f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL)"
        info["host"] = str(_sqlite_path(url).resolve().parent)
    return info


def print_environment(info: Mapping[str, str]) -> None:
    """Print `describe()` output as one block."""
    print("## Environment")
    for key, value in info.items():
        print(f"- {key}: {value}")
    print()


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


async def background_cpu(window: float = 1.0) -> float:
    """Fraction (0..1) of all CPUs busy during `window` seconds while this benchmark idles:
    other processes' load, which skews a 2-core machine's figures. NaN where unknown."""
    before = _cpu_times()
    await asyncio.sleep(window)
    after = _cpu_times()
    if before is None or after is None or after[1] == before[1]:
        return math.nan
    return (after[0] - before[0]) / (after[1] - before[1])


async def settle(max_busy: float, max_wait: float) -> float:
    """Wait (up to `max_wait` seconds) until other processes use less than `max_busy` of the
    CPUs; return the last background load seen, so a report can show how quiet it was."""
    deadline = time.monotonic() + max_wait
    while True:
        busy = await background_cpu()
        if math.isnan(busy) or busy <= max_busy or time.monotonic() >= deadline:
            return busy


def proc_cpu(pid: int) -> float | None:
    """utime + stime of a process in seconds (Linux), None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def backend_cpu(url: str) -> dict[int, float]:
    """CPU seconds so far (utime + stime) of each PostgreSQL backend connected to the database
    of `url`, by pid, this query's own excepted; {} on SQLite."""
    if engine_of(url) != "postgres":
        return {}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        pids = [int(r[0]) for r in await cur.fetchall()]
    return {pid: t for pid in pids if (t := proc_cpu(pid)) is not None}


class CpuMeter:
    """Share of all CPUs used by *other* processes during a run: total busy time (/proc/stat)
    minus this process and the PostgreSQL backends connected to the benchmark's database.
    Approximate (shared PostgreSQL processes such as the WAL writer count as "other"), but it
    shows when a neighbour's work skewed a figure. NaN where /proc is not available."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.others = math.nan
        self._machine: tuple[int, int] | None = None
        self._own = 0.0
        self._pg: dict[int, float] = {}

    async def _pg_times(self) -> dict[int, float]:
        return await backend_cpu(self.url)

    @staticmethod
    def _own_cpu() -> float:
        t = os.times()
        return t.user + t.system

    async def start(self) -> None:
        """Snapshot before the timed section (the meter's own query runs outside it)."""
        self._pg = await self._pg_times()
        self._own = self._own_cpu()
        self._machine = _cpu_times()

    async def stop(self) -> float:
        """Snapshot after the timed section; sets and returns `others`."""
        machine, own = _cpu_times(), self._own_cpu()
        pg = await self._pg_times()
        if machine is None or self._machine is None or machine[1] == self._machine[1]:
            return self.others
        ticks = os.sysconf("SC_CLK_TCK")
        busy = (machine[0] - self._machine[0]) / ticks
        total = (machine[1] - self._machine[1]) / ticks
        ours = (own - self._own) + sum(t - self._pg.get(pid, 0.0) for pid, t in pg.items())
        self.others = min(1.0, max(0.0, (busy - ours) / total))
        return self.others


@dataclass(slots=True)
class Quiet:
    """How hard the benchmarks try to measure on an otherwise idle machine (see README)."""

    max_background: float = 0.10  # wait until others use at most this share of the CPUs ...
    max_wait: float = 120.0  # ... for at most this long (seconds)
    max_others: float = 0.15  # a run during which others used more is run again ...
    retries: int = 2  # ... at most this many times

    def add_arguments(self, parser: Any) -> None:
        """The `--max-background/--max-wait/--max-others/--retries` options."""
        parser.add_argument(
            "--max-background",
            type=float,
            default=self.max_background,
            help="before each run, wait until other processes use at most this share of the CPUs (%(default)s) ...",
        )
        parser.add_argument(
            "--max-wait",
            type=float,
            default=self.max_wait,
            help="... but no longer than this many seconds (%(default)s); 0 disables the wait",
        )
        parser.add_argument(
            "--max-others",
            type=float,
            default=self.max_others,
            help="a run during which other processes used more than this share of the CPUs is "
            "run again (%(default)s) ...",
        )
        parser.add_argument(
            "--retries",
            type=int,
            default=self.retries,
            help="... at most this many times (%(default)s); the last attempt is kept",
        )

    @classmethod
    def from_args(cls, args: Any) -> Quiet:
        return cls(args.max_background, args.max_wait, args.max_others, max(0, args.retries))


async def measure(
    run: Callable[[], Awaitable[T]], others: Callable[[T], float], quiet: Quiet, label: str
) -> tuple[T, float]:
    """Run one measurement on a machine as quiet as it gets: wait for other processes to calm
    down, run, and run again (up to `quiet.retries` times) when they took more than
    `quiet.max_others` of the CPUs meanwhile. Returns the kept result and the background CPU
    share seen just before it."""
    attempt = 0
    while True:
        background = await settle(quiet.max_background, quiet.max_wait)
        result = await run()
        share = others(result)
        if math.isnan(share) or share <= quiet.max_others or attempt >= quiet.retries:
            return result, background
        attempt += 1
        print(
            f"  ({label}: other processes used {pct(share)} of the CPUs during the run; running it again)", flush=True
        )


def background_note(before: Sequence[float], during: Sequence[float] = ()) -> str:
    """A line for under a table: how busy the machine was with other work around the runs."""
    parts = []
    for label, values in (("just before each run", before), ("during the runs", during)):
        seen = [v for v in values if not math.isnan(v)]
        if seen:
            parts.append(f"{label}: median {pct(statistics.median(seen))}, max {pct(max(seen))}")
    if not parts:
        return ""
    return "\n\nCPU used by other processes (share of all cores) " + "; ".join(parts) + "."


def pct(value: float) -> str:
    """A fraction as a percentage."""
    return "n/a" if math.isnan(value) else f"{value * 100:.0f}%"


async def wait_until(predicate: Callable[[], Any], *, interval: float = 0.002) -> None:
    """Poll an async predicate until it is true (no deadline: the caller's run defines it)."""
    while not await predicate():
        await asyncio.sleep(interval)


def now() -> float:
    """The benchmark clock."""
    return time.perf_counter()
