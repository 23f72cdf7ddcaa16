"""Baton against other Python job queues, measured in one run on the same PostgreSQL.

Systems: baton (this repo's venv), oban (PyPI `oban`, Oban for Python by oban-bg; Python
>= 3.12), procrastinate, pgqueuer, and celery with its Redis broker. Every peer runs from its
own virtualenv under bench/.venvs/ (created on first use; build artefacts, not tracked), through
a small harness script bench/peers/<name>_harness.py that takes the measurement and its
parameters on argv and prints one JSON line. This script (run with Baton's venv) only
orchestrates: a fresh database per system and measurement (dropped afterwards), the
harness subprocess, medians, the table.

Figures per system (each the median of --repeat runs):
  - bulk insert: N no-op jobs through the system's fastest documented bulk path, jobs/s
    (building the job objects included);
  - processing: N no-op jobs inserted first, then worker node process(es) started; jobs/s from
    `go` to every job finished (acked in the database; Celery: counted by the workers), at
    concurrency 10 and 50 on one node (at 50 also with sync `def` workers: each system runs
    them in threads), and on two nodes at 50 each; a run still going after
    --max-seconds (30) is rated on the jobs finished by then, so one slow system cannot
    stretch the comparison;
  - insert-to-start latency p50/p99 on an idle queue: one node running, one job inserted at a
    time from the client process; wall clock before the enqueue call -> wall clock at the job
    function's first line in the node process (same machine, same clock), also as a multiple of
    a bare LISTEN/NOTIFY round trip measured right before each repeat's latency runs (back to
    back, and after idle gaps like the probes') and of the floor: the same probe loop run by
    peers/bare_harness.py, plain psycopg doing the least a LISTEN/NOTIFY queue can;
  - CPU per 1 000 jobs at concurrency 50: the node processes' and the local server's
    (PostgreSQL's processes; Redis's for Celery), with the machine's busy cores and the rate the
    cores would allow at that cost;
  - peak RSS per worker node (VmHWM of the node process, max over the processing runs);
  - (details) node and server CPU time per 1 000 jobs and busy cores of every processing run,
    start-up time to the first job, the enqueue call alone;
  - Baton only: a workflow of S steps (1 root -> S-2 fan-out -> 1 fan-in), steps/s.

Usage:
    .venv/bin/python bench/compare.py                       # everything, ~20-25 min on 2 cores
    .venv/bin/python bench/compare.py --wait-idle 10        # first wait (<= 10 min) for an idle machine
    .venv/bin/python bench/compare.py --quick               # 1 run, 2 000 jobs: a smoke check
    .venv/bin/python bench/compare.py --only baton,pgqueuer
    .venv/bin/python bench/compare.py --setup-only          # just create the peer venvs

Writes bench/results/latest.md (table, machine, versions, settings) and, untracked,
bench/results/latest.json (every raw run).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import benchlib
import psycopg
from psycopg import sql

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = HERE / "peers"
VENVS = HERE / ".venvs"
RESULTS = HERE / "results"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
ANALYZE_NOTE = (
    "A table filled by one bulk insert has no planner statistics for that content until autovacuum "
    "analyzes it (within a minute or so, i.e. sometimes in the middle of a run). Processing runs therefore "
    "use, per system, the condition that is better for it, fixed in advance from one measurement on this "
    "machine (20 000 jobs, 1 node, concurrency 50): procrastinate gets an ANALYZE after the insert (its "
    "one-job fetch query is planned badly on empty-table statistics: 64 jobs/s without, 230 with); "
    "oban-py runs without (with fresh statistics its per-job ack UPDATE uses the (state, queue, ...) index "
    "instead of the primary key: 614 jobs/s with, 1 138 without); Baton (5 967 with / 5 736 without) and "
    "pgqueuer (3 701 / 4 171) are insensitive and run without. `--analyze always|never` overrides this."
)


@dataclass(frozen=True)
class SystemDef:
    name: str
    label: str
    packages: tuple[str, ...]  # pip requirements for its venv (empty: Baton's own venv)
    min_python: tuple[int, int] = (3, 11)
    broker: str = "postgres"  # or "redis"
    analyze: bool = False  # ANALYZE between bulk insert and processing (see ANALYZE_NOTE)

    @property
    def harness(self) -> Path:
        return PEERS / f"{self.name}_harness.py"

    @property
    def venv(self) -> Path:
        return ROOT / ".venv" if self.name in ("baton", "bare") else VENVS / self.name

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


SYSTEMS = {
    s.name: s
    for s in (
        SystemDef("baton", "Baton", ()),
        SystemDef("oban", "oban-py", ("oban",), min_python=(3, 12)),
        SystemDef("procrastinate", "procrastinate", ("procrastinate", "psycopg[binary]"), analyze=True),
        SystemDef("pgqueuer", "pgqueuer", ("pgqueuer", "asyncpg")),
        SystemDef("celery", "Celery+Redis", ("celery[redis]",), broker="redis"),
    )
}

# Not a queue: the floor of idle insert-to-start latency (bench/peers/bare_harness.py), measured
# by the same probe loop in each repeat's latency step, in Baton's venv.
BARE = SystemDef("bare", "bare psycopg", ())
PROBE_GAP = 0.005  # the probe loop's random idle gap before each insert (common.measure_latency)


# --------------------------------------------------------------------------- environment


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def find_python(minimum: tuple[int, int]) -> str | None:
    """An interpreter >= `minimum`: $BATON_BENCH_PYTHON_<maj><min>, this one, python3.N on PATH,
    or a pyenv install."""
    env = os.environ.get(f"BATON_BENCH_PYTHON_{minimum[0]}{minimum[1]}")
    if env:
        return env
    if sys.version_info[:2] >= minimum:
        return sys.executable
    candidates: list[str] = []
    for minor in range(minimum[1], minimum[1] + 4):
        exe = shutil.which(f"python{minimum[0]}.{minor}")
        if exe and "/shims/" not in exe:  # a pyenv shim fails for versions not selected
            candidates.append(exe)
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv.is_dir():
        for d in sorted(pyenv.iterdir(), reverse=True):
            parts = d.name.split(".")
            if (
                len(parts) >= 2
                and parts[0].isdigit()
                and parts[1].isdigit()
                and (int(parts[0]), int(parts[1])) >= minimum
                and (d / "bin" / "python").exists()
            ):
                candidates.append(str(d / "bin" / "python"))
    return candidates[0] if candidates else None


def ensure_venv(s: SystemDef) -> str | None:
    """Create the system's venv if missing. Returns an error message or None."""
    if s.name == "baton":
        return None if s.python.exists() else f"Baton's venv {s.venv} is missing"
    marker = s.venv / ".bench-installed"
    if marker.exists() and marker.read_text().strip() == " ".join(s.packages):
        return None
    base = find_python(s.min_python)
    if base is None:
        return f"no Python >= {'.'.join(map(str, s.min_python))} found for {s.label}"
    VENVS.mkdir(parents=True, exist_ok=True)
    (VENVS / ".gitignore").write_text("*\n")  # build artefacts: keep them out of git
    log(f"[setup] creating {s.venv} with {base} and installing {' '.join(s.packages)}")
    try:
        subprocess.run([base, "-m", "venv", "--clear", str(s.venv)], check=True)
        subprocess.run([str(s.python), "-m", "pip", "install", "-q", *s.packages], check=True)
    except subprocess.CalledProcessError as exc:
        return f"installing {s.label} failed: {exc}"
    marker.write_text(" ".join(s.packages))
    return None


def redis_ok(url: str) -> bool:
    """`redis-cli ping` answers PONG (a raw PING on the socket if redis-cli is missing)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if shutil.which("redis-cli"):
        try:
            out = subprocess.run(
                ["redis-cli", "-h", host, "-p", str(port), "ping"], capture_output=True, text=True, timeout=5
            )
            return out.stdout.strip() == "PONG"
        except (OSError, subprocess.TimeoutExpired):
            return False
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


_db_counter = 0


class FreshDatabase:
    """CREATE DATABASE on enter, DROP ... WITH (FORCE) on exit."""

    def __init__(self, base_url: str, system: str) -> None:
        global _db_counter
        _db_counter += 1
        self.base_url = base_url
        self.name = f"bench_cmp_{system}_{os.getpid()}_{_db_counter}"
        self.url = with_database(base_url, self.name)

    def __enter__(self) -> str:
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        return self.url

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))


def machine(base_url: str) -> dict[str, str]:
    info: dict[str, str] = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    info["cpus"] = str(os.cpu_count())
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    info["os"] = platform.platform()
    with psycopg.connect(base_url, autocommit=True) as conn:
        row = conn.execute("SELECT version()").fetchone()
        info["postgresql"] = row[0] if row else "?"
        settings = conn.execute(
            "SELECT name, setting, unit FROM pg_settings WHERE name IN "
            "('synchronous_commit', 'shared_buffers', 'fsync', 'max_connections') ORDER BY name"
        ).fetchall()
        info["postgresql settings"] = ", ".join(f"{n}={v}{'' if not u else ' x ' + u}" for n, v, u in settings)
    info["postgresql host"] = urlsplit(base_url).hostname or "local socket"
    with psycopg.connect(base_url, autocommit=True) as conn:
        times = []
        for _ in range(500):
            t0 = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            times.append(time.perf_counter() - t0)
        info["pg round trip"] = f"{statistics.median(times) * 1e6:.0f} µs (median of 500 `SELECT 1` from psycopg)"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        info["baton commit"] = sha + (" + uncommitted changes in src/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def wait_for_idle(minutes: float, threshold: float) -> None:
    """Wait (bounded) for other work on the machine to finish: the figures are only comparable
    when the cores are not shared with something else."""
    deadline = time.monotonic() + minutes * 60
    while True:
        load = float(loadavg().split()[0])
        if load < threshold:
            return
        if time.monotonic() > deadline:
            log(f"[warn] load average still {load:.2f} after {minutes:g} min; measuring anyway")
            return
        log(f"[wait] load average {load:.2f} >= {threshold}; waiting for the machine to go idle")
        time.sleep(15)


# --------------------------------------------------------------------------- running harnesses


def run_harness(s: SystemDef, measurement: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one measurement in the system's venv; the harness's last stdout line is its JSON."""
    cmd = [str(s.python), str(s.harness), measurement, json.dumps(params)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("VIRTUAL_ENV", None)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-2000:]
        return {
            "ok": False,
            "error": f"timed out after {timeout:.0f}s",
            "stderr": tail.decode(errors="replace") if isinstance(tail, bytes) else str(tail),
        }
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
    if not lines:
        return {"ok": False, "error": f"exit {proc.returncode}, no JSON", "stderr": proc.stderr[-3000:]}
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"ok": False, "error": "bad JSON", "stderr": proc.stderr[-3000:]}
    if not result.get("ok"):
        result["stderr"] = proc.stderr[-3000:]
    return result


def measure(
    s: SystemDef, measurement: str, params: dict[str, Any], base_url: str, redis_url: str, timeout: float
) -> dict[str, Any]:
    t0 = time.perf_counter()
    if s.broker == "redis":
        result = run_harness(s, measurement, {"url": redis_url, **params}, timeout)
    else:
        with FreshDatabase(base_url, s.name) as url:
            result = run_harness(s, measurement, {"url": url, **params}, timeout)
    result["wall_s"] = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    extract: Callable[[dict[str, list[dict[str, Any]]]], list[float]]
    fmt: Callable[[float], str]
    baton_only: bool = False


def _vals(runs: dict[str, list[dict[str, Any]]], key: str, field_name: str, scale: float = 1.0) -> list[float]:
    return [r[field_name] * scale for r in runs.get(key, []) if r.get("ok") and r.get(field_name) is not None]


def _cpu_per_1000(runs: dict[str, list[dict[str, Any]]], key: str) -> list[float]:
    """Per repeat: CPU time of the node processes and of the local server processes (PostgreSQL,
    or Redis for Celery) from `go` to the end of the processing run, per 1 000 finished jobs."""
    return [
        r["node_cpu_ms_per_1000_jobs"] + r["server_cpu_ms_per_1000_jobs"]
        for r in runs.get(key, [])
        if r.get("ok") and r.get("node_cpu_ms_per_1000_jobs") and r.get("server_cpu_ms_per_1000_jobs") is not None
    ]


def _rss(runs: dict[str, list[dict[str, Any]]]) -> list[float]:
    """Per repeat: the largest node VmHWM over that repeat's processing runs, in MiB."""
    per_repeat: dict[int, float] = {}
    for key, rs in runs.items():
        if not key.startswith("process"):
            continue
        for r in rs:
            if r.get("ok") and r.get("rss_kib"):
                peak = max(x for x in r["rss_kib"] if x is not None) / 1024
                per_repeat[r["repeat"]] = max(per_repeat.get(r["repeat"], 0.0), peak)
    return list(per_repeat.values())


def fmt_rate(v: float) -> str:
    return f"{v:,.0f}"


def fmt_ms(v: float) -> str:
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def fmt_mib(v: float) -> str:
    return f"{v:.0f}"


FIGURES = [
    Figure("insert", "bulk insert", "jobs/s", True, lambda r: _vals(r, "insert", "jobs_per_s"), fmt_rate),
    Figure(
        "process_c10_n1",
        "processed, 1 node, concurrency 10",
        "jobs/s",
        True,
        lambda r: _vals(r, "process_c10_n1", "jobs_per_s"),
        fmt_rate,
    ),
    Figure(
        "process_c50_n1",
        "processed, 1 node, concurrency 50",
        "jobs/s",
        True,
        lambda r: _vals(r, "process_c50_n1", "jobs_per_s"),
        fmt_rate,
    ),
    Figure(
        "process_sync_c50_n1",
        "processed, sync workers, 1 node, concurrency 50",
        "jobs/s",
        True,
        lambda r: _vals(r, "process_sync_c50_n1", "jobs_per_s"),
        fmt_rate,
    ),
    Figure(
        "process_c50_n2",
        "processed, 2 nodes, concurrency 50 each",
        "jobs/s",
        True,
        lambda r: _vals(r, "process_c50_n2", "jobs_per_s"),
        fmt_rate,
    ),
    Figure(
        "latency_p50",
        "insert-to-start p50, idle queue",
        "ms",
        False,
        lambda r: _vals(r, "latency", "p50_s", 1000),
        fmt_ms,
    ),
    Figure(
        "latency_p99",
        "insert-to-start p99, idle queue",
        "ms",
        False,
        lambda r: _vals(r, "latency", "p99_s", 1000),
        fmt_ms,
    ),
    Figure(
        "cpu_c50",
        "CPU per 1 000 jobs at concurrency 50, node + server",
        "ms",
        False,
        lambda r: _cpu_per_1000(r, "process_c50_n1"),
        fmt_ms,
    ),
    Figure("rss", "peak RSS per worker node", "MiB", False, _rss, fmt_mib),
    Figure(
        "workflow",
        "workflow fan-out/fan-in",
        "steps/s",
        True,
        lambda r: _vals(r, "workflow", "steps_per_s"),
        fmt_rate,
        baton_only=True,
    ),
]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


@dataclass
class Plan:
    repeat: int
    jobs: int
    samples: int
    warmup: int
    steps: int
    systems: list[SystemDef]
    analyze: str = "auto"
    max_seconds: float = 30.0
    skipped: dict[str, str] = field(default_factory=dict)
    notify_rtt: float | None = None  # seconds, median over the repeats (set by the run)
    notify_rtt_idle: float | None = None  # the same with the probe loop's idle gap before each NOTIFY
    floor: list[dict[str, Any]] = field(default_factory=list)  # BARE's latency results, one per repeat

    def analyze_for(self, s: SystemDef) -> bool:
        return {"always": True, "never": False}.get(self.analyze, s.analyze)


KEYS = (
    "insert",
    "process_c10_n1",
    "process_c50_n1",
    "process_sync_c50_n1",
    "process_c50_n2",
    "latency",
    "workflow",
)


def measurements_for(s: SystemDef, plan: Plan) -> list[tuple[str, str, dict[str, Any], float]]:
    """(key, harness measurement, params, timeout) in the order they run."""
    jobs = plan.jobs
    proc = {"jobs": jobs, "analyze": plan.analyze_for(s), "max_seconds": plan.max_seconds}
    out = [
        ("insert", "insert", {"jobs": jobs}, 300.0),
        ("process_c10_n1", "process", {**proc, "concurrency": 10, "nodes": 1}, 900.0),
        ("process_c50_n1", "process", {**proc, "concurrency": 50, "nodes": 1}, 900.0),
        ("process_sync_c50_n1", "process", {**proc, "concurrency": 50, "nodes": 1, "kind": "sync"}, 900.0),
        ("process_c50_n2", "process", {**proc, "concurrency": 50, "nodes": 2}, 900.0),
        ("latency", "latency", {"samples": plan.samples, "warmup": plan.warmup}, 600.0),
    ]
    if s.name == "baton":
        out.append(("workflow", "workflow", {"steps": plan.steps, "concurrency": 50}, 1200.0))
    return out


def short(result: dict[str, Any]) -> str:
    if not result.get("ok"):
        return f"FAILED: {result.get('error')}"
    if "jobs_per_s" in result:
        capped = f", capped: {result['finished']:,} of {result['jobs']:,} done" if result.get("capped") else ""
        return f"{result['jobs_per_s']:,.0f} jobs/s ({result.get('seconds', 0):.2f} s{capped})"
    if "steps_per_s" in result:
        return f"{result['steps_per_s']:,.0f} steps/s ({result['seconds']:.2f} s)"
    if "p50_s" in result:
        return f"p50 {result['p50_s'] * 1000:.2f} ms, p99 {result['p99_s'] * 1000:.2f} ms"
    return "ok"


# --------------------------------------------------------------------------- report


def cell(values: list[float], fig: Figure, repeat: int) -> str:
    if not values:
        return "n/a"
    text = fig.fmt(median(values))
    if len(values) > 1 and repeat > 1:
        text += f" ({fig.fmt(min(values))}..{fig.fmt(max(values))})"
    return text


def build_table(plan: Plan, runs: dict[str, dict[str, list[dict[str, Any]]]], with_ranges: bool) -> str:
    names = [s.name for s in plan.systems]
    header = ["figure", *(SYSTEMS[n].label for n in names)]
    rows: list[list[str]] = []
    for fig in FIGURES:
        baton_vals = fig.extract(runs.get("baton", {})) if "baton" in runs else []
        b = median(baton_vals)
        row = [f"{fig.label} ({fig.unit})"]
        for n in names:
            if fig.baton_only and n != "baton":
                row.append("—")
                continue
            vals = fig.extract(runs.get(n, {}))
            text = cell(vals, fig, plan.repeat) if with_ranges else (fig.fmt(median(vals)) if vals else "n/a")
            if any(r.get("capped") for r in runs.get(n, {}).get(fig.key, [])):
                text += "*"
            if n != "baton" and vals and not math.isnan(b) and median(vals) > 0:
                text += f" · B/p {b / median(vals):.2f}x"
            row.append(text)
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def latency_order(order: Sequence[SystemDef], rep: int) -> list[SystemDef]:
    """The systems of a latency step with the floor (BARE) next to Baton: right before it in one
    repeat, right after it in the next. The floor moves with the machine's state (a checkpoint
    after the processing runs, the host's load) as much as the systems do, so the ratio Baton /
    floor is taken from runs seconds apart."""
    out = list(order)
    at = next((i for i, s in enumerate(out) if s.name == "baton"), len(out))
    out.insert(at + rep % 2, BARE)
    return out


def latency_yardsticks(plan: Plan, runs: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    """Each system's idle insert-to-start p50 against the yardsticks measured in this run: the
    NOTIFY round trip back to back and after idle gaps like the probes', and the bare floor."""
    p50s = {}
    for s in plan.systems:
        if values := _vals(runs.get(s.name, {}), "latency", "p50_s", 1000):
            p50s[s.label] = statistics.median(values)

    def ratios(ms: float) -> str:
        return ", ".join(f"{label} {v / ms:.1f}x" for label, v in p50s.items())

    assert plan.notify_rtt is not None
    out = [
        "Idle insert-to-start p50 as a multiple of a bare LISTEN/NOTIFY round trip measured in this run "
        f"(see Machine): back to back ({plan.notify_rtt * 1000:.3f} ms): {ratios(plan.notify_rtt * 1000)}."
    ]
    if plan.notify_rtt_idle:
        out[0] += (
            f" After a random 0-{PROBE_GAP * 1000:g} ms idle gap before each NOTIFY, as the probe loop leaves before "
            f"each insert ({plan.notify_rtt_idle * 1000:.3f} ms): {ratios(plan.notify_rtt_idle * 1000)}."
        )
    floor = [r["p50_s"] * 1000 for r in plan.floor if r.get("ok")]
    baton_p50 = {r["repeat"]: r["p50_s"] for r in runs.get("baton", {}).get("latency", []) if r.get("ok")}
    paired = [baton_p50[r["repeat"]] / r["p50_s"] for r in plan.floor if r.get("ok") and r["repeat"] in baton_p50]
    if floor:
        out[0] += (
            f" The floor — the same probe loop with bare psycopg, one insert-and-notify statement and one "
            f"claiming UPDATE per job (`bench/peers/bare_harness.py`) — p50 {statistics.median(floor):.2f} ms "
            f"({min(floor):.2f}..{max(floor):.2f}), its insert call alone "
            f"{statistics.median(r['enqueue_call_p50_s'] * 1000 for r in plan.floor if r.get('ok')):.2f} ms; "
            f"each system against it: {ratios(statistics.median(floor))}"
            + (
                f" (Baton against the floor run next to it, per repeat: {', '.join(f'{x:.2f}x' for x in paired)})."
                if paired
                else "."
            )
        )
    return out


def cpu_budget(plan: Plan, runs: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    """What the one-node concurrency-50 rates cost in CPU, and the rate the machine's cores allow
    at that cost: a system that keeps the cores busy is bounded by its CPU per job, one that
    leaves them idle by its waits."""
    cores = os.cpu_count() or 1
    parts = []
    for s in plan.systems:
        r = runs.get(s.name, {})
        per_1000 = _cpu_per_1000(r, "process_c50_n1")
        rate = _vals(r, "process_c50_n1", "jobs_per_s")
        busy = _vals(r, "process_c50_n1", "machine_busy_cores")
        if not per_1000 or not rate:
            continue
        cpu = median(per_1000)
        node = median(_vals(r, "process_c50_n1", "node_cpu_ms_per_1000_jobs"))
        parts.append(
            f"{s.label} {cpu:.0f} ms per 1 000 jobs (node {node:.0f}, server {cpu - node:.0f}), "
            f"{median(busy):.2f} of {cores} cores busy, at most {cores / cpu * 1e6:,.0f} jobs/s at that cost"
        )
    if not parts:
        return []
    return [
        "CPU at concurrency 50, one node (median per system; the server is PostgreSQL, Redis for Celery): "
        + "; ".join(parts)
        + ". A rate twice another system's needs half its CPU per job, or the other leaving cores idle."
    ]


def details(plan: Plan, runs: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    out: list[str] = []
    for s in plan.systems:
        r = runs.get(s.name, {})
        bits = []
        ins = [x for x in r.get("insert", []) if x.get("ok")]
        if ins:
            bits.append(
                f"insert call alone {median([x['insert_only_jobs_per_s'] for x in ins]):,.0f} jobs/s, "
                f"building the jobs {median([x['build_seconds'] for x in ins]) * 1000:.0f} ms"
            )
        for key in ("process_c10_n1", "process_c50_n1", "process_sync_c50_n1", "process_c50_n2"):
            ps = [x for x in r.get(key, []) if x.get("ok")]
            if ps:
                first = [x["first_job_s"] for x in ps if x.get("first_job_s") is not None]
                rss = [max(v for v in x["rss_kib"] if v) / 1024 for x in ps if x.get("rss_kib")]
                cpu = [x["node_cpu_ms_per_1000_jobs"] for x in ps if x.get("node_cpu_ms_per_1000_jobs")]
                server = [x["server_cpu_ms_per_1000_jobs"] for x in ps if x.get("server_cpu_ms_per_1000_jobs")]
                busy = [x["machine_busy_cores"] for x in ps if x.get("machine_busy_cores") is not None]
                text = f"{key}: {median([x['seconds'] for x in ps]):.2f} s"
                if first:
                    text += f", first job {median(first) * 1000:.0f} ms after go"
                if rss:
                    text += f", node RSS {median(rss):.0f} MiB"
                if cpu:
                    text += f", node CPU {median(cpu):.0f} ms per 1 000 jobs"
                if server:
                    text += f", server CPU {median(server):.0f} ms per 1 000 jobs"
                if busy:
                    text += f", {median(busy):.2f} cores busy"
                capped = [x for x in ps if x.get("capped")]
                if capped:
                    done = median([x["finished"] for x in capped])
                    text += f" ({len(capped)} of {len(ps)} runs capped, {done:,.0f} done)"
                bits.append(text)
        lat = [x for x in r.get("latency", []) if x.get("ok")]
        if lat:
            call = median([x["enqueue_call_p50_s"] for x in lat]) * 1000
            bits.append(
                f"latency: enqueue call alone p50 {call:.2f} ms,"
                f" mean {median([x['mean_s'] for x in lat]) * 1000:.2f} ms, "
                f"max {median([x['max_s'] for x in lat]) * 1000:.1f} ms"
            )
        wf = [x for x in r.get("workflow", []) if x.get("ok")]
        if wf:
            ins_wf = median([x["insert_workflow_seconds"] for x in wf])
            bits.append(
                f"workflow {plan.steps:,} steps: insert_workflow {ins_wf:.2f} s"
                f" (+ building {median([x['build_seconds'] for x in wf]):.2f} s), run "
                f"{median([x['seconds'] for x in wf]):.2f} s, node RSS "
                f"{median([max(v for v in x['rss_kib'] if v) / 1024 for x in wf]):.0f} MiB"
            )
        failures = [f"{k}: {x.get('error')}" for k, xs in r.items() for x in xs if not x.get("ok")]
        if failures:
            bits.append("FAILURES: " + "; ".join(failures))
        out.append(f"- **{s.label}**: " + "; ".join(bits))
    return out


def write_report(
    path: Path,
    plan: Plan,
    runs: dict[str, dict[str, list[dict[str, Any]]]],
    env: dict[str, str],
    infos: dict[str, dict[str, Any]],
    elapsed: float,
    quick: bool,
) -> None:
    lines = [
        "# Baton compared with Python peers",
        "",
        f"Generated by `bench/compare.py{' --quick' if quick else ''}` "
        f"({'1 run' if plan.repeat == 1 else f'median of {plan.repeat} runs, range in brackets'}; "
        f"{plan.jobs:,} no-op jobs per insert/processing run, {plan.samples} latency samples after "
        f"{plan.warmup} warm-up, workflow of {plan.steps:,} steps). Total time {elapsed / 60:.1f} min.",
        "",
        "`B/p` is Baton's figure divided by the peer's, from the same run: above 1 means Baton is higher "
        "(better for jobs/s and steps/s, worse for ms and MiB).",
        "",
        build_table(plan, runs, with_ranges=True),
        "",
        f"`*`: at least one run of that figure was cut at {plan.max_seconds:g} s; its rate is the jobs finished "
        "by then over the elapsed time (see Details).",
        "",
    ]
    if plan.notify_rtt:
        lines += [*latency_yardsticks(plan, runs), ""]
    if budget := cpu_budget(plan, runs):
        lines += [*budget, ""]
    if plan.skipped:
        lines += ["Skipped: " + "; ".join(f"{k}: {v}" for k, v in plan.skipped.items()), ""]
    lines += ["## Details", "", *details(plan, runs), ""]
    lines += [
        "## How it is measured",
        "",
        "- Every system and measurement gets a fresh PostgreSQL database (`CREATE DATABASE`, dropped with "
        "`FORCE` afterwards); Celery gets a fresh Redis queue name (deleted afterwards).",
        "- Each peer runs from its own venv under `bench/.venvs/` via `bench/peers/<name>_harness.py`; the "
        "harness process is the client (schema, inserts, timing) and every worker node is a separate process "
        "of the same script.",
        "- Bulk insert: wall time of building the job objects plus the bulk call(s).",
        "- Processing: jobs inserted first, node processes started (imports done, app built) and waiting; "
        "the clock runs from `go` (so node start-up — connecting, LISTEN — is inside it) to the moment the "
        "client sees no unfinished job: for the PostgreSQL systems an `EXISTS` query on the job table every "
        "10 ms (finished = acked in the database), for Celery the workers' own `task_postrun` count. A run "
        f"still going after {plan.max_seconds:g} s is stopped and rated on the jobs finished by then.",
        f"- Planner statistics: {ANALYZE_NOTE} This run: "
        + ", ".join(
            f"{s.label} {'ANALYZE' if plan.analyze_for(s) else 'no ANALYZE'}"
            for s in plan.systems
            if s.broker == "postgres"
        )
        + ".",
        "- Latency: one node at concurrency 10 on an idle queue; the client inserts one probe job, waits for "
        "it to start, waits until it is finished (acked; at most 50 ms) and 0-5 ms more, and repeats. Latency = "
        "`time.time()` before the enqueue call → `time.time()` on the job function's first line (reported "
        "by the node on its stdout pipe). The yardsticks, measured in each repeat right before its latency runs: "
        "a bare LISTEN/NOTIFY round trip (NOTIFY on one connection, received on another), back to back and with "
        "the probe loop's random idle gap before each NOTIFY; and the floor, the same probe loop run against "
        "`bench/peers/bare_harness.py`: plain psycopg, one autocommit insert-and-notify statement, a node that claims "
        "the row with one `UPDATE ... FOR UPDATE SKIP LOCKED` (synchronous_commit off, as Baton's fetch) and runs it.",
        "- Peak RSS: `VmHWM` from `/proc/<pid>/status` of each node process at the end of each processing "
        "run; the figure is the largest node of the repeat.",
        "- Node CPU (Details): user + system CPU time of the node processes from `go` to the end of a "
        "processing run (`/proc/<pid>/stat`), per 1 000 finished jobs. Server CPU: the same for the "
        "machine's PostgreSQL processes (backends, WAL writer, autovacuum, checkpointer), or Redis's for "
        "Celery, over the same interval (the client's 10 ms poll included; a process that exits during the "
        "run is not counted); the table's CPU row is node + server at concurrency 50. Cores busy: the "
        "machine's non-idle share of `/proc/stat` over the run, times the cores.",
        "- Logging: every system's loggers at WARNING; no tracing or metrics exporters.",
        "- Round trips dominate: `pg round trip` under Machine is the median `SELECT 1` time from Python on "
        "this machine; systems that do one statement per job (oban-py's insert and ack, procrastinate's "
        "fetch, Celery's Redis commands) scale with it, batched designs much less.",
        "- The event loop is the standard asyncio loop everywhere (no uvloop).",
        "",
        "## Settings per system",
        "",
    ]
    for s in plan.systems:
        info = infos.get(s.name, {})
        lines.append(
            f"**{s.label}** (`{s.venv.relative_to(ROOT)}`): "
            + ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
        )
        lines += [f"- {x}" for x in info.get("settings", [])]
        lines.append("")
    lines += ["## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in env.items()]
    lines.append("")
    path.write_text("\n".join(lines))


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="1 run, 2 000 jobs, 30 latency samples, 1 000-step workflow")
    p.add_argument("--only", default=",".join(SYSTEMS), help="comma-separated systems (%(default)s)")
    p.add_argument(
        "--url",
        default=os.environ.get("BATON_BENCH_URL", DEFAULT_PG),
        help="PostgreSQL server; a database is created per measurement (%(default)s)",
    )
    p.add_argument("--redis", default=DEFAULT_REDIS, help="Redis broker for Celery (%(default)s)")
    p.add_argument("--repeat", type=int, help="runs per figure (3; --quick 1)")
    p.add_argument("--jobs", type=int, help="jobs per insert/processing run (20 000; --quick 2 000)")
    p.add_argument("--samples", type=int, help="latency samples per run (200; --quick 30)")
    p.add_argument("--steps", type=int, help="Baton workflow steps (10 000; --quick 1 000)")
    p.add_argument("--out", type=Path, default=RESULTS / "latest.md", help="report file (%(default)s)")
    p.add_argument(
        "--analyze",
        choices=("auto", "always", "never"),
        default="auto",
        help="ANALYZE between bulk insert and processing: auto = per system, as the report explains (%(default)s)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        help="cap per processing run; a slower system is rated on the jobs finished by then (30; --quick 15)",
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="MINUTES",
        help="first wait up to MINUTES for the 1-minute load average to drop below --idle-load",
    )
    p.add_argument("--idle-load", type=float, default=0.7, help="load average counted as idle (%(default)s)")
    p.add_argument("--setup-only", action="store_true", help="create the peer venvs and exit")
    args = p.parse_args(argv)
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in args.only if x not in SYSTEMS]
    if unknown:
        p.error(f"--only: unknown system(s) {unknown}; choose from {', '.join(SYSTEMS)}")
    q = args.quick
    args.repeat = args.repeat or (1 if q else 3)
    args.jobs = args.jobs or (2_000 if q else 20_000)
    args.samples = args.samples or (30 if q else 200)
    args.steps = args.steps or (1_000 if q else 10_000)
    args.max_seconds = args.max_seconds or (15.0 if q else 30.0)
    if min(args.repeat, args.jobs, args.samples) < 1 or args.steps < 3:
        p.error("--repeat, --jobs, --samples must be positive and --steps at least 3")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    plan = Plan(
        args.repeat,
        args.jobs,
        args.samples,
        5 if args.quick else 10,
        args.steps,
        [],
        analyze=args.analyze,
        max_seconds=args.max_seconds,
    )
    for name in args.only:
        s = SYSTEMS[name]
        if s.broker == "redis" and not redis_ok(args.redis):
            plan.skipped[name] = f"Redis at {args.redis} does not answer PING (`redis-cli ping` failed)"
            log(f"[skip] {s.label}: {plan.skipped[name]}")
            continue
        err = ensure_venv(s)
        if err:
            plan.skipped[name] = err
            log(f"[skip] {s.label}: {err}")
            continue
        plan.systems.append(s)
    if args.setup_only:
        return 0
    if not plan.systems:
        log("nothing to measure")
        return 1

    if args.wait_idle > 0:
        wait_for_idle(args.wait_idle, args.idle_load)
    env = machine(args.url)
    env["load average at start"] = loadavg()
    infos: dict[str, dict[str, Any]] = {}
    for s in plan.systems:
        params = {"url": args.redis} if s.broker == "redis" else {}
        info = run_harness(s, "info", params, 120)
        if not info.get("ok"):
            plan.skipped[s.name] = f"harness does not start: {info.get('error')}\n{info.get('stderr', '')}"
            log(f"[skip] {s.label}: {plan.skipped[s.name]}")
            continue
        infos[s.name] = info
    plan.systems = [s for s in plan.systems if s.name in infos]
    env["pythons"] = ", ".join(f"{s.label} {infos[s.name]['versions']['python']}" for s in plan.systems)
    if float(env["load average at start"].split()[0] or 0) > 1.0:
        log(
            f"[warn] load average {env['load average at start']} on {os.cpu_count()} cores: other work is "
            "running, figures will be noisy"
        )

    # Interleaved: each measurement runs for every system back to back, so the systems a ratio
    # compares were measured minutes apart at most, under the same background load.
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {s.name: {} for s in plan.systems}
    notify_rtts: list[float] = []  # one per repeat, right before its latency measurements
    idle_rtts: list[float] = []  # the same, each NOTIFY after an idle gap like the probes'
    for rep in range(1, plan.repeat + 1):
        order = plan.systems if rep % 2 else list(reversed(plan.systems))
        for key in KEYS:
            if key == "latency":
                notify_rtts.append(asyncio.run(benchlib.notify_rtt(args.url)))
                idle_rtts.append(asyncio.run(benchlib.notify_rtt(args.url, gap=PROBE_GAP)))
                log(
                    f"[run {rep}/{plan.repeat}] LISTEN/NOTIFY round trip {notify_rtts[-1] * 1000:.3f} ms, "
                    f"after idle gaps {idle_rtts[-1] * 1000:.3f} ms"
                )
            for s in latency_order(order, rep) if key == "latency" else order:
                if s is BARE:
                    floor = measure(
                        BARE, "latency", {"samples": plan.samples, "warmup": plan.warmup}, args.url, "", 600.0
                    )
                    floor["repeat"] = rep
                    plan.floor.append(floor)
                    log(f"[run {rep}/{plan.repeat}] {BARE.label:<14} latency (floor) {short(floor)}")
                    continue
                todo = [m for m in measurements_for(s, plan) if m[0] == key]
                if not todo:
                    continue
                _, measurement, params, timeout = todo[0]
                result = measure(s, measurement, params, args.url, args.redis, timeout)
                result["repeat"] = rep
                result["load"] = loadavg()
                runs[s.name].setdefault(key, []).append(result)
                log(
                    f"[run {rep}/{plan.repeat}] {s.label:<14} {key:<15} {short(result)}  "
                    f"(wall {result['wall_s']:.1f} s, load {result['load']})"
                )
                if not result.get("ok") and result.get("stderr"):
                    log("    " + result["stderr"].strip().replace("\n", "\n    ")[-1500:])
    elapsed = time.perf_counter() - started
    env["load average at end"] = loadavg()
    if notify_rtts:
        env["LISTEN/NOTIFY round trip"] = (
            f"{statistics.median(notify_rtts) * 1000:.3f} ms (median of the repeats: "
            + ", ".join(f"{x * 1000:.3f}" for x in notify_rtts)
            + " ms; each the median of 300 NOTIFYs received on a second connection, measured right before "
            "that repeat's latency runs)"
        )
    if idle_rtts:
        env["LISTEN/NOTIFY round trip after idle gaps"] = (
            f"{statistics.median(idle_rtts) * 1000:.3f} ms (median of the repeats: "
            + ", ".join(f"{x * 1000:.3f}" for x in idle_rtts)
            + f" ms; as above, each NOTIFY sent after a random 0-{PROBE_GAP * 1000:g} ms sleep, the gap the "
            "latency probe loop leaves before each insert: on this VM a process woken from idle pays for the wake-up)"
        )
    plan.notify_rtt = statistics.median(notify_rtts) if notify_rtts else None
    plan.notify_rtt_idle = statistics.median(idle_rtts) if idle_rtts else None

    print()
    print(build_table(plan, runs, with_ranges=False))
    print()
    print("B/p = Baton / peer from this run (>1: Baton higher; better for jobs/s, worse for ms and MiB).")
    print(f"* = at least one run was cut at {plan.max_seconds:g} s and rated on the jobs finished by then.")
    for line in details(plan, runs):
        print(line)
    if plan.skipped:
        print("Skipped: " + "; ".join(f"{k}: {v}" for k, v in plan.skipped.items()))
    print(
        f"Total time {elapsed / 60:.1f} min; load average {env['load average at start']} -> "
        f"{env['load average at end']}"
    )

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_report(args.out, plan, runs, env, infos, elapsed, args.quick)
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {
                "plan": {"repeat": plan.repeat, "jobs": plan.jobs, "samples": plan.samples, "steps": plan.steps},
                "machine": env,
                "infos": infos,
                "runs": runs,
                "skipped": plan.skipped,
            },
            indent=1,
            default=str,
        )
    )
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
