"""The chaos harness shared by the fault-injection tests and `bench/chaos.py`: a fresh database
with evidence probes, a cluster of node subprocesses that can be killed and restarted, a mixed
workload of jobs and workflows, the faults themselves (kill -9, PostgreSQL restarts), and the
invariant check that turns the evidence into figures and violations.

Evidence comes from two places, so that neither Baton's own bookkeeping nor a killed process
can hide a fault:

- **triggers** on Baton's tables (installed by the test, not by Baton) log every job state
  change (`chaos_transitions`), every deleted job (`chaos_job_deletes`) and every claimed
  workflow completion (`chaos_claims`), in the same transaction as the change;
- **the nodes** record every worker execution (`chaos_exec`) and every finished telemetry event,
  `on_workflow_finished` delivery, fenced ack and failed plugin sweep (`chaos_events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))  # tests/: pg.py

import fault_node  # noqa: E402
from fault_node import SideStore  # noqa: E402

import baton  # noqa: E402
import pg  # noqa: E402
from baton.job import TERMINAL_STATES  # noqa: E402
from polling import wait_for  # noqa: E402, F401 - the fault tests import it from here

NODE_PROGRAM = str(HERE / "fault_node.py")
NON_TERMINAL = ("available", "scheduled", "suspended", "executing", "retryable")
BATON_TABLES = (
    "baton_jobs",
    "baton_producers",
    "baton_workflows",
    "workflow_nodes",
    "baton_workflow_deps",
    "workflow_completions",
    "workflow_step_stats",
    "workflow_debug_logs",
)

# Every job state change SPEC section 1 allows (the suite never calls retry, so nothing may
# leave a terminal state).
ALLOWED_TRANSITIONS = frozenset(
    {
        ("scheduled", "available"),  # stager
        ("retryable", "available"),  # stager
        ("suspended", "available"),  # workflow release
        # ... or to `scheduled` when its scheduled_at is still ahead of the releasing
        # transaction's clock (PostgreSQL's now() is the transaction's start).
        ("suspended", "scheduled"),
        ("available", "executing"),  # fetch
        ("executing", "completed"),
        ("executing", "retryable"),
        ("executing", "discarded"),  # last attempt failed, Discard, or lifeline (exhausted)
        ("executing", "scheduled"),  # snooze
        ("executing", "available"),  # lifeline rescue, shutdown hand-back, stray reconciliation
        ("available", "discarded"),  # lifeline: available with no attempts left
    }
    | {(state, "cancelled") for state in NON_TERMINAL}
)


# --------------------------------------------------------------------------- databases


@dataclass
class FaultDatabase:
    """A fresh Baton database (migrated, with evidence probes) and its side store."""

    engine: str
    url: str
    side_url: str
    name: str | None = None  # PostgreSQL database to drop
    directory: Path | None = None

    @property
    def postgres(self) -> bool:
        return self.engine == "postgres"

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement on Baton's database (qmark placeholders), on a new connection."""
        return _run_sql(self.url, sql, params)

    def side(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement on the side store."""
        return _run_sql(self.side_url, sql, params)

    async def aquery(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self.query, sql, params)

    def attempted_node(self) -> str:
        """SQL for the node name of a job's last attempt."""
        return "attempted_by[1]" if self.postgres else "json_extract(attempted_by, '$[0]')"


def _run_sql(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(fault_node.sqlite_path(url), timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            cur = conn.execute(sql, tuple(params))
            return cur.fetchall() if cur.description else []
        finally:
            conn.close()
    with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
        cur = conn.execute(sql.replace("?", "%s"), tuple(params))  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


PG_PROBES = """
CREATE TABLE chaos_transitions (seq bigserial, job_id bigint, old_state text, new_state text, attempt integer,
                                node text, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE chaos_job_deletes (job_id bigint, state text, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE chaos_claims (workflow_id text, status text, announced_by text,
                           at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION chaos_log_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_transitions (job_id, old_state, new_state, attempt, node)
    VALUES (NEW.id, OLD.state, NEW.state, NEW.attempt, NEW.attempted_by[1]);
    RETURN NULL;
END $$;
CREATE FUNCTION chaos_log_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_job_deletes (job_id, state) VALUES (OLD.id, OLD.state);
    RETURN NULL;
END $$;
CREATE FUNCTION chaos_log_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_claims (workflow_id, status, announced_by) VALUES (NEW.workflow_id, NEW.status, NEW.announced_by);
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_transitions AFTER UPDATE OF state ON baton_jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION chaos_log_transition();
CREATE TRIGGER chaos_job_deletes AFTER DELETE ON baton_jobs FOR EACH ROW EXECUTE FUNCTION chaos_log_delete();
CREATE TRIGGER chaos_claims AFTER INSERT ON workflow_completions FOR EACH ROW EXECUTE FUNCTION chaos_log_claim();
"""

SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
SQLITE_PROBES = [
    "CREATE TABLE chaos_transitions (seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER, old_state TEXT, "
    "new_state TEXT, attempt INTEGER, node TEXT, at REAL)",
    "CREATE TABLE chaos_job_deletes (job_id INTEGER, state TEXT, at REAL)",
    "CREATE TABLE chaos_claims (workflow_id TEXT, status TEXT, announced_by TEXT, at REAL)",
    f"""CREATE TRIGGER chaos_transitions AFTER UPDATE OF state ON baton_jobs FOR EACH ROW
        WHEN OLD.state IS NOT NEW.state BEGIN
        INSERT INTO chaos_transitions (job_id, old_state, new_state, attempt, node, at)
        VALUES (NEW.id, OLD.state, NEW.state, NEW.attempt,
                                              json_extract(NEW.attempted_by, '$[0]'), {SQLITE_NOW});
        END""",
    f"""CREATE TRIGGER chaos_job_deletes AFTER DELETE ON baton_jobs FOR EACH ROW BEGIN
        INSERT INTO chaos_job_deletes VALUES (OLD.id, OLD.state, {SQLITE_NOW}); END""",
    f"""CREATE TRIGGER chaos_claims AFTER INSERT ON workflow_completions FOR EACH ROW BEGIN
        INSERT INTO chaos_claims VALUES (NEW.workflow_id, NEW.status, NEW.announced_by, {SQLITE_NOW}); END""",
]


async def create_fault_database(engine: str, directory: Path) -> FaultDatabase:
    """A new migrated database with the evidence probes installed. PostgreSQL: a new database
    on the test server; SQLite: `baton.db` (and the side store `side.db`) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    if engine == "postgres":
        url, name = pg.create_database("baton_faults")
        db = FaultDatabase("postgres", url, url, name=name, directory=directory)
    else:
        db = FaultDatabase(
            "sqlite", f"sqlite:///{directory / 'baton.db'}", f"sqlite:///{directory / 'side.db'}", directory=directory
        )
    app = baton.Baton(db.url, plugins=[], log_events=False)
    try:
        await app.migrate()
    finally:
        await app.close()
    if db.postgres:
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute(PG_PROBES)  # type: ignore[arg-type]
    else:
        conn = sqlite3.connect(fault_node.sqlite_path(db.url), isolation_level=None)
        try:
            for statement in SQLITE_PROBES:
                conn.execute(statement)
        finally:
            conn.close()
    SideStore(db.side_url).create_tables()
    return db


def drop_fault_database(db: FaultDatabase) -> None:
    """Drop the PostgreSQL database (the SQLite files go with their directory)."""
    if db.name is not None:
        pg.drop_database(db.name)


# --------------------------------------------------------------------------- node processes


class NodeProcess:
    """A node (or inserter) subprocess running fault_node.py; stderr goes to `log_path`."""

    def __init__(self, argv: Sequence[str], name: str, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, NODE_PROGRAM, *argv],
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.pid = self.proc.pid
        self.started = time.time()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    async def ready(self, timeout: float = 60.0) -> None:
        """Wait for the `ready NAME` line."""
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        if not line.startswith(b"ready"):
            raise AssertionError(f"node {self.name} did not start (exit {self.proc.poll()}):\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait()

    async def terminate(self, timeout: float = 15.0) -> tuple[int | None, bool]:
        """SIGTERM (graceful stop) and wait; SIGKILL if it takes too long. Returns the exit
        code and whether it printed `stopped`."""
        if self.alive:
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, signal.SIGTERM)
        stopped = False
        try:
            out = await asyncio.wait_for(asyncio.to_thread(self.proc.communicate), timeout)
            stopped = b"stopped" in (out[0] or b"")
        except TimeoutError:
            self.kill()
        self.close()
        return self.proc.returncode, stopped

    def close(self) -> None:
        if self.alive:
            self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


@dataclass
class KillRecord:
    """One kill -9: when, which node incarnation, the jobs it was executing, and how long
    until they were all back in play (available again, or running or finished elsewhere)."""

    slot: int
    node: str
    at: float
    executing: list[int]
    recovered_after: float | None = None


class Cluster:
    """`size` node slots on one database. A slot's incarnations are named `n<slot>.<k>`, so
    every producer row, attempt and event names the exact process that made it."""

    def __init__(self, db: FaultDatabase, size: int, log_dir: Path, **node_options: Any) -> None:
        self.db = db
        self.size = size
        self.log_dir = log_dir
        self.options = node_options
        self.nodes: dict[int, NodeProcess] = {}
        self.incarnations: dict[int, int] = defaultdict(int)
        self.names: list[str] = []
        self.kills: list[KillRecord] = []
        self.restarts = 0

    def _argv(self, name: str, queues: str | None = None) -> list[str]:
        opts = self.options
        argv = ["node", self.db.url, "--side", self.db.side_url, "--node", name]
        argv += ["--queues", queues or opts.get("queues", "default:10")]
        if opts.get("retention"):
            argv.append("--retention")
        if opts.get("pool_size"):
            argv += ["--pool-size", str(opts["pool_size"])]
        if opts.get("lifeline_timeout"):
            argv += ["--lifeline-timeout", str(opts["lifeline_timeout"])]
        if opts.get("memory_limit_mb"):
            argv += ["--memory-limit-mb", str(opts["memory_limit_mb"])]
        return argv

    async def start_slot(self, slot: int, queues: str | None = None) -> NodeProcess:
        self.incarnations[slot] += 1
        name = f"n{slot}.{self.incarnations[slot]}"
        env = {"MALLOC_ARENA_MAX": "2"} if self.options.get("memory_limit_mb") else None
        node = NodeProcess(self._argv(name, queues), name, self.log_dir / f"{name}.log", env)
        self.nodes[slot] = node
        self.names.append(name)
        await node.ready()
        return node

    async def start(self) -> None:
        await asyncio.gather(*(self.start_slot(slot) for slot in range(self.size)))

    def live_names(self) -> set[str]:
        return {n.name for n in self.nodes.values() if n.alive}

    async def kill(self, slot: int) -> KillRecord:
        node = self.nodes[slot]
        node.kill()
        at = time.time()
        executing = [
            r[0]
            for r in await retrying(
                self.db.aquery,
                f"SELECT id FROM baton_jobs WHERE state = 'executing' AND {self.db.attempted_node()} = ?",
                (node.name,),
            )
        ]
        record = KillRecord(slot, node.name, at, executing)
        self.kills.append(record)
        node.close()
        return record

    async def restart(self, slot: int) -> NodeProcess:
        self.restarts += 1
        return await self.start_slot(slot)

    async def stop(self) -> list[tuple[str, int | None, bool]]:
        """Stop every live node gracefully (concurrently); returns (name, exit code, stopped)."""
        nodes = list(self.nodes.values())
        results = await asyncio.gather(*(n.terminate() for n in nodes))
        return [(n.name, code, stopped) for n, (code, stopped) in zip(nodes, results, strict=True)]

    def close(self) -> None:
        """Kill whatever is left (on failure paths)."""
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.close()

    def logs(self) -> dict[str, str]:
        return {p.stem: p.read_text(errors="replace") for p in sorted(self.log_dir.glob("n*.log"))}


# --------------------------------------------------------------------------- workload


@dataclass
class PlannedWorkflow:
    """A workflow the driver inserted, with the final state it expects of each step."""

    shape: str
    expected: dict[str, str]
    results: dict[str, int] = field(default_factory=dict)  # step -> expected recorded result
    grafted: dict[str, str] = field(default_factory=dict)  # steps its graft steps insert -> expected state
    wid: str | None = None
    job_ids: dict[str, int] = field(default_factory=dict)

    @property
    def fails(self) -> bool:
        return any(state != "completed" for state in self.expected.values())


SHAPES = ("fan", "chain", "diamond_ignore", "failing_chain", "flaky", "sub", "graft", "graft_nested")
GRAFT_SHAPES = {"graft", "graft_nested"}


class Workload:
    """A reproducible mix of plain jobs and workflows (fan-out/fan-in, chains, failing steps
    that are discarded, dependents that ignore a discarded dependency, snoozes, first-attempt
    failures, sub-workflows), over both sync and async workers."""

    def __init__(self, workers: dict[str, Any], seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.work = workers["chaos.work"]
        self.awork = workers["chaos.awork"]
        self.link = workers["chaos.link"]
        self.graft = workers["chaos.graft"]
        self.counter = 0

    def _worker(self) -> Any:
        return self.work if self.rng.random() < 0.6 else self.awork

    def job(self) -> tuple[baton.JobSpec, str]:
        """One plain job and its expected final state."""
        self.counter += 1
        r = self.rng.random()
        args: dict[str, Any] = {"n": self.counter, "sleep": self.rng.uniform(0.002, 0.03)}
        opts: dict[str, Any] = {"priority": self.rng.randint(0, 9)}
        expected = "completed"
        if r < 0.06:
            args["sleep"] = self.rng.uniform(0.3, 1.2)  # long: likely executing when a node dies
        elif r < 0.09:
            args["mode"], opts["max_attempts"] = "fail_first", 3
        elif r < 0.11:
            args["mode"], opts["max_attempts"], expected = "fail", 2, "discarded"
        elif r < 0.13:
            args["mode"] = "snooze"
        elif r < 0.14:
            args["mode"], expected = "discard", "discarded"
        elif r < 0.15:
            opts["schedule_in"] = self.rng.uniform(0.2, 2.0)
        return self._worker().new(args, **opts), expected

    def links(self, key: str, first: int, count: int) -> list[baton.JobSpec]:
        """Links `first`.. of chain `key` (chained by args.key), some snoozing once."""
        return [
            self.link.new(
                {
                    "key": key,
                    "seq": first + i,
                    "sleep": self.rng.uniform(0.005, 0.2),
                    "mode": "snooze" if self.rng.random() < 0.1 else "ok",
                }
            )
            for i in range(count)
        ]

    def step(self, mode: str = "ok", **extra: Any) -> baton.JobSpec:
        args: dict[str, Any] = {"mode": mode, "sleep": extra.pop("sleep", self.rng.uniform(0.002, 0.05))}
        return self._worker().new(args, **extra)

    def workflow(self, index: int) -> tuple[baton.Workflow, PlannedWorkflow]:
        shape = SHAPES[index % len(SHAPES)]
        wf = baton.Workflow(label=f"chaos-{shape}-{index}")
        expected: dict[str, str] = {}
        results: dict[str, int] = {}
        if shape == "fan":
            k = self.rng.randint(3, 8)
            wf.add("root", self.step())
            for i in range(k):
                wf.add(f"b{i}", self.step(), deps=["root"])
            wf.add("join", self.step(), deps=[f"b{i}" for i in range(k)])
            expected = {"root": "completed", **{f"b{i}": "completed" for i in range(k)}, "join": "completed"}
            results = {"root": 1, "join": 1 + 2 * k}
        elif shape == "chain":
            n = self.rng.randint(4, 8)
            for i in range(n):
                wf.add(f"s{i}", self.step(), deps=[f"s{i - 1}"] if i else [])
            expected = {f"s{i}": "completed" for i in range(n)}
            results = {f"s{n - 1}": n}
        elif shape == "diamond_ignore":
            wf.add("root", self.step())
            wf.add("a", self.step("fail", max_attempts=2), deps=["root"])
            wf.add("b", self.step(), deps=["root"])
            wf.add("join", self.step(), deps=["a", "b"], ignore_discarded=True)
            wf.add("final", self.step(), deps=["join"])
            expected = {"root": "completed", "a": "discarded", "b": "completed", "join": "completed"}
            expected["final"] = "completed"
            results = {"join": 1 + 2, "final": 1 + 3}  # the discarded dep has no result
        elif shape == "failing_chain":
            wf.add("s0", self.step())
            wf.add("s1", self.step("fail", max_attempts=2), deps=["s0"])
            wf.add("s2", self.step(), deps=["s1"])
            wf.add("s3", self.step(), deps=["s2"])
            expected = {"s0": "completed", "s1": "discarded", "s2": "cancelled", "s3": "cancelled"}
        elif shape == "flaky":
            wf.add("root", self.step())
            wf.add("x", self.step("snooze"), deps=["root"])
            wf.add("y", self.step("fail_first", max_attempts=3), deps=["root"])
            wf.add("z", self.step(sleep=self.rng.uniform(0.3, 1.0)), deps=["root"])
            wf.add("join", self.step(), deps=["x", "y", "z"])
            expected = {name: "completed" for name in ("root", "x", "y", "z", "join")}
            results = {"join": 1 + 3 * 2}
        elif shape in GRAFT_SHAPES:
            k = self.rng.randint(3, 20)
            items = [
                {"mode": "fail_first" if self.rng.random() < 0.15 else "ok", "sleep": self.rng.uniform(0.002, 0.05)}
                for _ in range(k)
            ]
            form = "nested" if shape == "graft_nested" else "map"
            wf.add("root", self.step())
            wf.add_graft("process", self.graft.new({"items": items, "form": form, "sleep": 0.01}), deps=["root"])
            wf.add("join", self.step(), deps=["process"])
            expected = {name: "completed" for name in ("root", "process", "join")}
            if form == "map":
                grafted = [f"process.{i}" for i in range(k)]
                results = {"join": 1 + k}  # every grafted step returns 1 (no deps)
            else:  # process.a -> 1, process.b -> 2, process.inner.<i> -> 1 each
                grafted = ["process.a", "process.b", "process.inner", *(f"process.inner.{i}" for i in range(k))]
                results = {"join": 1 + 1 + 2 + k}
            return wf, PlannedWorkflow(shape, expected, results, grafted={g: "completed" for g in grafted})
        else:  # sub
            inner = baton.Workflow(label="inner")
            inner.add("a", self.step())
            inner.add("b", self.step(), deps=["a"])
            inner.add("c", self.step(), deps=["a"])
            wf.add("root", self.step())
            wf.add_workflow("sub", inner, deps=["root"])
            wf.add("final", self.step(), deps=["sub"])
            expected = {name: "completed" for name in ("root", "sub.a", "sub.b", "sub.c", "final")}
            results = {"sub.b": 2, "sub.c": 2}  # sub.a reads no upstream: `sub` is its only dep
        return wf, PlannedWorkflow(shape, expected, results)


# --------------------------------------------------------------------------- PostgreSQL restarts


def _ancestors(pid: int) -> set[int]:
    seen = {pid}
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        seen.add(pid)
    return seen


def busy_neighbours() -> list[str]:
    """Benchmarks or other pytest sessions sharing this PostgreSQL server (restarting it would
    ruin their figures or fail their tests). Our own process and its ancestors do not count."""
    if shutil.which("pgrep") is None:
        return []  # nothing to tell by; a machine without procps is a CI box of its own
    found = subprocess.run(
        ["pgrep", "-af", r"bench/(throughput|workflow|compare)|pytest"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    me = os.getpid()
    mine = _ancestors(me)
    others = []
    for line in found:
        pid, _, cmd = line.partition(" ")
        if not pid.isdigit() or int(pid) in mine or "pgrep" in cmd:
            continue
        if me in _ancestors(int(pid)):
            continue  # our own nodes and inserter (their paths may say "pytest")
        others.append(line)
    return others


async def wait_until_quiet(timeout: float, poll: float = 30.0, say: Callable[[str], None] | None = None) -> bool:
    """Wait (polling every `poll` s) until no benchmark or other test session runs."""
    deadline = time.monotonic() + timeout
    while True:
        busy = busy_neighbours()
        if not busy:
            return True
        if time.monotonic() >= deadline:
            return False
        if say is not None:
            say(f"waiting for {len(busy)} neighbour process(es) before restarting PostgreSQL: {busy[:3]}")
        await asyncio.sleep(poll)


def postgres_cluster(port: int = 5432) -> tuple[str, str] | None:
    """(version, name) of the pg_ctlcluster-managed cluster on `port`, or None."""
    if shutil.which("pg_lsclusters") is None or shutil.which("pg_ctlcluster") is None:
        return None
    out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == str(port):
            return parts[0], parts[1]
    return None


def server_port(url: str) -> int:
    from urllib.parse import urlsplit

    return urlsplit(url).port or 5432


async def _pg_ctl(cluster: tuple[str, str], action: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "pg_ctlcluster",
        "--skip-systemctl-redirect",
        cluster[0],
        cluster[1],
        action,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"pg_ctlcluster {action} failed ({proc.returncode}): {out.decode(errors='replace')}")


async def _wait_connectable(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await asyncio.to_thread(_run_sql, url, "SELECT 1")
            return
        except psycopg.Error:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


@dataclass
class RestartRecord:
    """One PostgreSQL restart: when it began, when the server accepted connections again,
    and when a node next fetched a job (the first `available -> executing` after that)."""

    began: float
    up: float
    outage: float
    first_fetch: float | None = None

    @property
    def to_first_fetch(self) -> float | None:
        return None if self.first_fetch is None else self.first_fetch - self.began


async def restart_postgres(cluster: tuple[str, str], url: str, outage: float) -> RestartRecord:
    """`pg_ctlcluster restart` (outage 0) or stop, wait `outage` seconds, start."""
    began = time.time()
    if outage <= 0:
        await _pg_ctl(cluster, "restart")
    else:
        await _pg_ctl(cluster, "stop")
        await asyncio.sleep(outage)
        await _pg_ctl(cluster, "start")
    await _wait_connectable(url)
    return RestartRecord(began, time.time(), outage)


# --------------------------------------------------------------------------- the scenario


@dataclass
class ChaosConfig:
    """What to run: the workload size, the faults, and how long to wait for the end."""

    name: str = ""  # the scenario's title in the report (default: named after its faults)
    jobs: int = 3_000
    workflows: int = 40
    chains: int = 20  # chain keys, each of `chain_length` links inserted in two halves
    chain_length: int = 6
    nodes: int = 3
    node_limit: int = 10
    feed_seconds: float = 15.0
    kill_interval: float | None = 3.0  # seconds between kill -9s (None: no kills)
    restart_delay: float = 0.7
    pg_restarts: Sequence[float] = ()  # outage seconds of each PostgreSQL restart (0: plain restart)
    inserter: bool = False  # an extra process inserting through every path, recording outcomes
    inserter_lanes: int = 1  # concurrent insert calls in the inserter process
    inserter_pool_size: int = 0  # the inserter's pool_size (0: Baton's default)
    retention: bool = False  # Pruner + WorkflowHealth(prune=True)
    node_options: dict[str, Any] = field(default_factory=dict)  # pool_size, memory_limit_mb, lifeline_timeout
    settle_timeout: float = 120.0  # after feeding, how long all work may take to finish
    seed: int = 7


@dataclass
class ChaosResult:
    """What happened (figures) and what went wrong (violations)."""

    engine: str
    config: ChaosConfig
    figures: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    kills: list[KillRecord] = field(default_factory=list)
    restarts: list[RestartRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)

    def violation(self, text: str) -> None:
        self.violations.append(text)

    def describe_violations(self, limit: int = 40) -> str:
        lines = self.violations[:limit]
        more = len(self.violations) - len(lines)
        return "\n".join(lines + ([f"... and {more} more"] if more > 0 else []))


class Driver:
    """Runs one chaos scenario: feeds the workload, injects the faults, waits for the end,
    and checks the invariants."""

    def __init__(self, db: FaultDatabase, config: ChaosConfig, log_dir: Path, say: Callable[[str], None] = print):
        self.db = db
        self.cfg = config
        self.log_dir = log_dir
        self.say = say
        self.result = ChaosResult(db.engine, config)
        self.app = baton.Baton(db.url, plugins=[], log_events=False)
        self.workers = fault_node.register(self.app)
        self.workload = Workload(self.workers, config.seed)
        self.expected: dict[int, str] = {}  # job id -> expected final state (plain jobs)
        self.workflows: list[PlannedWorkflow] = []
        self.chains: dict[str, list[int]] = defaultdict(list)  # key -> link job ids, in insertion order
        self.cluster = Cluster(
            db,
            config.nodes,
            log_dir,
            queues=f"default:{config.node_limit}",
            retention=config.retention,
            **config.node_options,
        )
        self.stop_faults = asyncio.Event()
        self.peaks: Counter[str] = Counter()
        self.feed_errors: list[str] = []
        self.inserter: NodeProcess | None = None
        self.inserter_out = log_dir / "inserter.jsonl"
        self.inserter_stop = log_dir / "inserter.stop"

    # -- feeding ------------------------------------------------------------------------

    async def _insert(self, what: str, call: Callable[[], Any]) -> Any:
        """Insert like a careful client: a BatonError (database down) is retried; any other
        exception is a violation (SPEC 7: failures are BatonErrors), and retried too."""
        while True:
            try:
                return await call()
            except baton.BatonError as exc:
                self.feed_errors.append(f"{what}: {type(exc).__name__}")
            except Exception as exc:
                self.result.violation(f"feeding {what} raised {type(exc).__module__}.{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.5)

    async def feed(self) -> None:
        cfg = self.cfg
        ticks = max(1, int(cfg.feed_seconds / 0.5))
        per_tick = [cfg.jobs // ticks + (1 if i < cfg.jobs % ticks else 0) for i in range(ticks)]
        # Every other group of three ticks inserts its jobs in one call: batches of 200 rows and
        # more go by COPY, smaller ones by one INSERT statement; both paths get their share.
        for t in range(0, ticks - 2, 6):
            per_tick[t] += per_tick[t + 1] + per_tick[t + 2]
            per_tick[t + 1] = per_tick[t + 2] = 0
        wf_ticks = [cfg.workflows // ticks + (1 if i < cfg.workflows % ticks else 0) for i in range(ticks)]
        wf_index = 0
        half = cfg.chain_length // 2
        chain_ticks = [cfg.chains // ticks + (1 if i < cfg.chains % ticks else 0) for i in range(ticks)]
        chain_index = 0
        pending_halves: list[str] = []
        for tick in range(ticks):
            started = time.monotonic()
            n = per_tick[tick]
            planned = [self.workload.job() for _ in range(n)]
            if planned:
                jobs = await self._insert("jobs", lambda p=planned: self.app.insert_all([s for s, _ in p]))
                for job, (_, expected) in zip(jobs, planned, strict=True):
                    self.expected[job.id] = expected
            # Chains: the first half of new keys' links now, their second half a tick later.
            batch: list[tuple[str, baton.JobSpec]] = []
            for key in pending_halves:
                batch += [(key, spec) for spec in self.workload.links(key, half, cfg.chain_length - half)]
            pending_halves = []
            for _ in range(chain_ticks[tick]):
                key = f"k{chain_index}"
                chain_index += 1
                batch += [(key, spec) for spec in self.workload.links(key, 0, half)]
                pending_halves.append(key)
            if tick == ticks - 1:  # no tick left for second halves: insert them now
                for key in pending_halves:
                    batch += [(key, spec) for spec in self.workload.links(key, half, cfg.chain_length - half)]
            if batch:
                jobs = await self._insert("chain links", lambda b=batch: self.app.insert_all([s for _, s in b]))
                for job, (key, _) in zip(jobs, batch, strict=True):
                    self.chains[key].append(job.id)
                    self.expected[job.id] = "completed"
            for _ in range(wf_ticks[tick]):
                wf, plan = self.workload.workflow(wf_index)
                wf_index += 1
                plan.wid = await self._insert("workflow", lambda w=wf: self.app.insert_workflow(w))
                rows = await retrying(
                    self.db.aquery, "SELECT name, job_id FROM workflow_nodes WHERE workflow_id = ?", (plan.wid,)
                )
                plan.job_ids = {name: job_id for name, job_id in rows}
                self.workflows.append(plan)
            await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - started)))

    # -- faults -------------------------------------------------------------------------

    async def killer(self) -> None:
        rng = random.Random(self.cfg.seed + 1)
        assert self.cfg.kill_interval is not None
        watchers = []
        while not self.stop_faults.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_faults.wait(), self.cfg.kill_interval * rng.uniform(0.7, 1.3))
            if self.stop_faults.is_set():
                break
            slot = rng.randrange(self.cfg.nodes)
            record = await self.cluster.kill(slot)
            watchers.append(asyncio.create_task(self._watch_recovery(record)))
            await asyncio.sleep(self.cfg.restart_delay)
            await self.cluster.restart(slot)
        await asyncio.gather(*watchers)

    async def _watch_recovery(self, record: KillRecord, timeout: float = 60.0) -> None:
        if not record.executing:
            return
        ids = ",".join(str(i) for i in record.executing)
        sql = (
            f"SELECT count(*) FROM baton_jobs WHERE id IN ({ids}) AND state = 'executing' "
            f"AND {self.db.attempted_node()} = ?"
        )
        while time.time() - record.at < timeout:
            with contextlib.suppress(Exception):
                if (await self.db.aquery(sql, (record.node,)))[0][0] == 0:
                    record.recovered_after = time.time() - record.at
                    return
            await asyncio.sleep(0.05)

    async def restarter(self, cluster: tuple[str, str]) -> None:
        started, count = time.monotonic(), len(self.cfg.pg_restarts)
        watchers = []
        for i, outage in enumerate(self.cfg.pg_restarts):
            # Spread the restarts over the feeding period.
            due = started + self.cfg.feed_seconds * (i + 1) / (count + 1)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if busy_neighbours():
                self.result.notes.append("a PostgreSQL restart was skipped: a benchmark or test session started")
                continue
            self.say(f"restarting PostgreSQL (outage {outage:g}s)")
            record = await restart_postgres(cluster, self.db.url, outage)
            self.result.restarts.append(record)
            watchers.append(asyncio.create_task(self._watch_first_fetch(record)))
        await asyncio.gather(*watchers)

    async def _watch_first_fetch(self, record: RestartRecord, timeout: float = 60.0) -> None:
        sql = (
            "SELECT extract(epoch FROM min(at)) FROM chaos_transitions "
            "WHERE new_state = 'executing' AND at > to_timestamp(?)"
        )
        while time.time() - record.up < timeout:
            with contextlib.suppress(Exception):
                (value,) = (await self.db.aquery(sql, (record.up,)))[0]
                if value is not None:
                    record.first_fetch = float(value)
                    return
            await asyncio.sleep(0.1)

    async def sampler(self) -> None:
        """Peak row counts of Baton's tables (retention keeps them bounded)."""
        counts = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in BATON_TABLES)
        while not self.stop_faults.is_set():
            with contextlib.suppress(Exception):
                for table, n in await self.db.aquery(counts):
                    self.peaks[table] = max(self.peaks[table], n)
            await asyncio.sleep(0.5)

    # -- waiting for the end --------------------------------------------------------------

    async def unfinished(self) -> int:
        placeholders = ",".join("?" for _ in NON_TERMINAL)
        (n,) = (await self.db.aquery(f"SELECT count(*) FROM baton_jobs WHERE state IN ({placeholders})", NON_TERMINAL))[
            0
        ]
        (claims,) = (await self.db.aquery("SELECT count(DISTINCT workflow_id) FROM chaos_claims"))[0]
        return int(n) + (len(self.workflows) - int(claims))

    async def wait_settled(self) -> bool:
        deadline = time.monotonic() + self.cfg.settle_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if await self.unfinished() == 0:
                    return True
            await asyncio.sleep(0.25)
        return False

    async def wait_dead_producers_gone(self) -> float | None:
        """Seconds until every producer row belongs to a live node (the Lifeline deletes the
        rows of dead nodes once their jobs are rescued), or None if that never happened."""
        started = time.monotonic()
        limit = fault_node.STALE_AFTER + 4 * fault_node.RESCUE_INTERVAL + 5
        while time.monotonic() - started < limit:
            rows = await self.db.aquery("SELECT DISTINCT node FROM baton_producers")
            dead = {r[0] for r in rows} - self.cluster.live_names()
            if not dead:
                return time.monotonic() - started
            await asyncio.sleep(0.25)
        self.result.violation(
            f"producer rows of dead nodes {sorted(dead)} still exist {limit:g}s after the faults stopped"
        )
        return None

    async def wait_drained(self, timeout: float = 30.0) -> dict[str, int]:
        """With retention on, wait until Baton's tables are empty again (all work is old and
        terminal); returns the row counts at the end."""
        counts = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in BATON_TABLES if t != "baton_producers")
        deadline = time.monotonic() + timeout
        while True:
            rows = dict(await self.db.aquery(counts))
            if not any(rows.values()) or time.monotonic() > deadline:
                return {k: int(v) for k, v in rows.items()}
            await asyncio.sleep(0.5)

    # -- run ------------------------------------------------------------------------------

    async def run(self, during: Callable[[Driver], Any] | None = None) -> ChaosResult:
        """Run the scenario; `during(driver)` (a coroutine function) runs alongside the
        feeding, to add special jobs (`driver.expected[id] = state`) or faults of its own."""
        cfg, res = self.cfg, self.result
        began = time.monotonic()
        cluster_id = None
        if cfg.pg_restarts:
            cluster_id = postgres_cluster(server_port(self.db.url))
            if cluster_id is None:
                raise RuntimeError("no pg_ctlcluster-managed PostgreSQL cluster serves this database")
        tasks: list[asyncio.Task[Any]] = []
        helpers: list[asyncio.Task[Any]] = []
        try:
            await self.cluster.start()
            self.say(f"{cfg.nodes} nodes ready on {self.db.engine}")
            if cfg.inserter:
                self.inserter = NodeProcess(
                    [
                        "inserter",
                        self.db.url,
                        "--out",
                        str(self.inserter_out),
                        "--stop",
                        str(self.inserter_stop),
                        "--lanes",
                        str(cfg.inserter_lanes),
                        "--pool-size",
                        str(cfg.inserter_pool_size),
                    ],
                    "inserter",
                    self.log_dir / "inserter.log",
                )
            feeder = asyncio.create_task(self.feed())
            extra = asyncio.create_task(during(self)) if during is not None else None
            if cfg.kill_interval:
                tasks.append(asyncio.create_task(self.killer()))
            if cluster_id is not None:
                tasks.append(asyncio.create_task(self.restarter(cluster_id)))
            sampler = asyncio.create_task(self.sampler())
            helpers = [t for t in (feeder, extra, sampler) if t is not None]
            await feeder
            self.say(f"fed {len(self.expected)} jobs and {len(self.workflows)} workflows")
            if extra is not None:
                await extra
            if self.inserter is not None:
                # Stop inserting once the restarts are over (they run during the feeding period).
                if cluster_id is not None:
                    await tasks[-1]
                self.inserter_stop.touch()
                await asyncio.to_thread(self.inserter.proc.wait, 60)
            settled = await self.wait_settled()
            self.stop_faults.set()
            await asyncio.gather(*tasks)
            await sampler
            if not settled:
                res.violation(
                    f"work did not finish within {cfg.settle_timeout:g}s of the end of feeding: "
                    f"{await self.unfinished()} jobs/workflows unfinished"
                )
            # Nodes killed last may have been restarted meanwhile; give a final kill time to heal.
            for slot, node in self.cluster.nodes.items():
                if not node.alive:
                    res.violation(f"node {node.name} died on its own:\n{node.log_tail()}")
                    await self.cluster.restart(slot)
            res.figures["dead producer rows gone after (s)"] = _round(await self.wait_dead_producers_gone())
            if not settled:
                await self.wait_settled()  # a last chance, for a complete picture
            if cfg.retention:
                res.figures["rows left with retention"] = await self.wait_drained()
                res.figures["peak rows"] = dict(self.peaks)
            stops = await self.cluster.stop()
            for name, code, stopped in stops:
                if code != 0 or not stopped:
                    res.violation(f"node {name} did not stop gracefully on SIGTERM (exit {code})")
            left = await self.db.aquery("SELECT node FROM baton_producers")
            if left:
                res.violation(f"gracefully stopped nodes left producer rows: {left[:5]}")
            res.figures["duration (s)"] = round(time.monotonic() - began, 1)
            await asyncio.to_thread(self.analyse)
        finally:
            # Stop injecting faults first (a killer mid-restart must not spawn another node),
            # then kill whatever runs: nothing outlives the scenario, even when it failed.
            for task in tasks + helpers:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.gather(*tasks, *helpers, return_exceptions=True), 10)
            if self.inserter is not None:
                self.inserter_stop.touch()
                self.inserter.close()
            self.cluster.close()
            res.logs = self.cluster.logs()
            res.kills = self.cluster.kills
            await self.app.close()
        return res

    # -- the invariants ---------------------------------------------------------------------

    def _collect_grafts(self) -> None:
        """Add the steps graft steps inserted to their plans (so the checks below cover them as
        inserted jobs), and count grafted steps lost or inserted twice."""
        res, db = self.result, self.db
        expected = found = lost = duplicated = pruned = 0
        for plan in self.workflows:
            if not plan.grafted:
                continue
            rows = db.query(
                "SELECT name, job_id FROM workflow_nodes WHERE workflow_id = ? AND parent IS NOT NULL", (plan.wid,)
            )
            if not rows and not db.query("SELECT 1 FROM baton_workflows WHERE id = ?", (plan.wid,)):
                pruned += 1  # retention removed the finished workflow's rows: nothing to count
                continue
            names = Counter(name for name, _ in rows)
            expected += len(plan.grafted)
            found += len(rows)
            missing = set(plan.grafted) - set(names)
            extra = [n for n, c in names.items() if c > 1 or n not in plan.grafted]
            lost += len(missing)
            duplicated += len(extra)
            if missing:
                res.violation(f"workflow {plan.wid} ({plan.shape}) lost grafted steps: {sorted(missing)[:10]}")
            if extra:
                res.violation(f"workflow {plan.wid} ({plan.shape}) grafted twice or unexpectedly: {extra[:10]}")
            for name, job_id in rows:
                plan.job_ids.setdefault(name, job_id)
                plan.expected.setdefault(name, plan.grafted.get(name, "completed"))
        res.figures.update(
            {
                "graft workflows": sum(1 for p in self.workflows if p.grafted),
                "grafted steps (expected / found)": f"{expected} / {found}"
                + (f" ({pruned} workflows pruned before the check)" if pruned else ""),
                "grafted steps lost": lost,
                "grafted steps duplicated": duplicated,
            }
        )

    def analyse(self) -> None:
        res, db = self.result, self.db
        self._collect_grafts()
        jobs = {
            r[0]: {"state": r[1], "attempt": r[2], "meta": _json(r[3]), "workflow_id": r[4]}
            for r in db.query("SELECT id, state, attempt, meta, workflow_id FROM baton_jobs")
        }
        deleted = defaultdict(list)
        for job_id, state in db.query("SELECT job_id, state FROM chaos_job_deletes"):
            deleted[job_id].append(state)
        transitions = db.query(
            "SELECT job_id, old_state, new_state, attempt, node, seq FROM chaos_transitions ORDER BY seq"
        )
        claims = db.query("SELECT workflow_id, status, announced_by FROM chaos_claims")
        executions = db.side("SELECT job_id, attempt, node FROM chaos_exec")
        events = db.side("SELECT kind, workflow_id, job_id, status, detail, node FROM chaos_events")

        def final_state(job_id: int) -> str | None:
            if job_id in jobs:
                return jobs[job_id]["state"]
            return deleted[job_id][-1] if deleted.get(job_id) else None

        # Every inserted job is terminal (or was pruned in a terminal state); none vanished.
        inserted = dict(self.expected)
        for plan in self.workflows:
            for name, job_id in plan.job_ids.items():
                inserted[job_id] = plan.expected.get(name, "completed")
        inserter_ids, inserter_figures = self._inserter_outcomes(final_state)
        for job_id in inserter_ids:
            inserted.setdefault(job_id, "completed")
        lost = [i for i in inserted if final_state(i) is None]
        stuck = [i for i in inserted if final_state(i) not in (None, *TERMINAL_STATES)]
        for job_id, states in deleted.items():
            if any(s not in TERMINAL_STATES for s in states):
                res.violation(f"job {job_id} was deleted while {states}")
        if lost:
            res.violation(f"{len(lost)} inserted jobs vanished: {lost[:10]}")
        if stuck:
            res.violation(f"{len(stuck)} jobs never finished: {[(i, final_state(i)) for i in stuck[:10]]}")

        # Transitions: only the allowed ones; `completed` recorded once and never overwritten.
        completions: Counter[int] = Counter()
        completing_attempt: dict[int, int] = {}
        illegal: Counter[tuple[str, str]] = Counter()
        rescued_back = 0
        for job_id, old, new, attempt, _node, _seq in transitions:
            if (old, new) not in ALLOWED_TRANSITIONS:
                illegal[(old, new)] += 1
                if illegal[(old, new)] <= 3:
                    res.violation(f"illegal transition {old} -> {new} of job {job_id} (attempt {attempt})")
            if new == "completed":
                completions[job_id] += 1
                completing_attempt[job_id] = attempt
            if old == "executing" and new == "available":
                rescued_back += 1
        duplicated = {j: n for j, n in completions.items() if n > 1}
        if duplicated:
            res.violation(f"{len(duplicated)} jobs completed more than once: {list(duplicated.items())[:10]}")
        overwritten = [t for t in transitions if t[1] in TERMINAL_STATES]
        out_of_order = self._check_chains(transitions)
        if overwritten:
            res.violation(f"{len(overwritten)} terminal states overwritten: {overwritten[:10]}")

        # Executions: an attempt runs at most once; a completed job ran its completing attempt.
        runs: Counter[tuple[int, int]] = Counter((j, a) for j, a, _ in executions)
        twice = {k: n for k, n in runs.items() if n > 1}
        if twice:
            res.violation(f"{len(twice)} attempts executed more than once (double fetch): {list(twice)[:10]}")
        per_job = Counter(j for j, _, _ in executions)
        for job_id, attempt in completing_attempt.items():
            meta = jobs.get(job_id, {}).get("meta") or {}
            if (job_id, attempt) not in runs and not meta.get("replayed"):
                res.violation(f"job {job_id} completed at attempt {attempt} without executing it")

        # Final states as designed (a job discarded by the Lifeline for having no attempts left
        # after repeated kills is at-most-once by design, SPEC section 5).
        exhausted = {j for j, info in jobs.items() if (info["meta"] or {}).get("repair") == "exhausted"}
        unexpected = [
            (j, want, final_state(j))
            for j, want in self.expected.items()
            if final_state(j) in TERMINAL_STATES and final_state(j) != want and j not in exhausted
        ]
        if unexpected:
            res.violation(
                f"{len(unexpected)} jobs ended in an unexpected state (id, expected, actual): {unexpected[:10]}"
            )

        # Workflows: terminated, exactly one claim, one finished event, status as the steps say.
        claims_by: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for wid, status, by in claims:
            claims_by[wid].append((status, by))
        finished_by: dict[str, list[tuple[str, str]]] = defaultdict(list)
        deliveries_by: dict[str, list[str]] = defaultdict(list)
        fenced = []
        plugin_errors = []
        for kind, wid, job_id, status, detail, node in events:
            if kind == "finished":
                finished_by[wid].append((status, node))
            elif kind == "delivery":
                deliveries_by[wid].append(node)
            elif kind == "fenced":
                fenced.append((job_id, detail, node))
            elif kind == "plugin_exception":
                plugin_errors.append(detail)
        dup_announcements = 0
        missing_announcements = 0
        results = self._recorded_results()
        for plan in self.workflows:
            wid = plan.wid
            states = {name: final_state(job_id) for name, job_id in plan.job_ids.items()}
            failed = any(s in ("cancelled", "discarded") for s in states.values())
            want_status = "failed" if failed else "completed"
            if len(claims_by[wid]) != 1:
                res.violation(f"workflow {wid} ({plan.shape}) has {len(claims_by[wid])} completion claims")
            if len(finished_by[wid]) > 1:
                dup_announcements += 1
                res.violation(
                    f"workflow {wid} ({plan.shape}) announced {len(finished_by[wid])} times: {finished_by[wid]}"
                )
            elif not finished_by[wid]:
                missing_announcements += 1
                res.violation(f"workflow {wid} ({plan.shape}) was never announced (no finished event)")
            for status, _ in finished_by[wid] + claims_by[wid]:
                if status != want_status:
                    res.violation(f"workflow {wid} ({plan.shape}) announced {status}, its steps say {want_status}")
            per_node = Counter(deliveries_by[wid])
            if not per_node:
                res.violation(f"workflow {wid} ({plan.shape}) was delivered to no on_workflow_finished subscriber")
            if any(n > 1 for n in per_node.values()):
                res.violation(f"workflow {wid} ({plan.shape}) delivered twice to one node: {dict(per_node)}")
            if not any(plan.job_ids[name] in exhausted for name in plan.job_ids):
                wrong = {n: (want, states.get(n)) for n, want in plan.expected.items() if states.get(n) != want}
                if wrong:
                    res.violation(f"workflow {wid} ({plan.shape}) steps ended wrong (expected, actual): {wrong}")
                for name, value in plan.results.items():
                    got = results.get(plan.job_ids[name], value)
                    if got != value:
                        res.violation(f"workflow {wid} ({plan.shape}) step {name} recorded {got!r}, expected {value!r}")

        kills = self.cluster.kills
        recovered = [k.recovered_after for k in kills if k.recovered_after is not None]
        for k in kills:
            if k.executing and k.recovered_after is None:
                res.violation(f"the {len(k.executing)} jobs of killed node {k.node} were never rescued")
        res.figures.update(
            {
                "jobs": len(self.expected) + len(inserter_ids),
                "workflows": len(self.workflows),
                "workflow steps": sum(len(p.job_ids) for p in self.workflows),
                "kills (kill -9)": len(kills),
                "node restarts": self.cluster.restarts,
                "PostgreSQL restarts": len(self.result.restarts),
                "executions": len(executions),
                "jobs run more than once (retried, snoozed or rescued)": sum(1 for n in per_job.values() if n > 1),
                "rescues (executing -> available)": rescued_back,
                "fenced acks": len(fenced),
                "plugin sweep failures": len(plugin_errors),
                "lost": len(lost) + len(stuck),
                "duplicated completions": len(duplicated) + len(overwritten),
                "duplicated announcements": dup_announcements,
                "missing announcements": missing_announcements,
                "illegal transitions": sum(illegal.values()),
                "chain links (keys)": f"{sum(len(v) for v in self.chains.values())} ({len(self.chains)})",
                "chain links run out of order": out_of_order,
                "attempts executed twice": len(twice),
                "discarded by the Lifeline as exhausted": len(exhausted),
            }
        )
        for record in self.result.restarts:
            if record.first_fetch is None:
                res.violation(f"no job was fetched within 60 s of PostgreSQL coming back (restart at {record.began})")
        if kills:
            res.figures.update(
                {
                    "jobs executing on killed nodes": sum(len(k.executing) for k in kills),
                    "time to recover after kill -9, median (s)": _round(statistics.median(recovered))
                    if recovered
                    else None,
                    "time to recover after kill -9, max (s)": _round(max(recovered)) if recovered else None,
                }
            )
        if self.result.restarts:
            restarts = self.result.restarts
            res.figures["PostgreSQL down -> up (s)"] = [_round(r.up - r.began) for r in restarts]
            res.figures["PostgreSQL restart -> first fetch (s)"] = [_round(r.to_first_fetch) for r in restarts]
            res.figures["PostgreSQL back up -> first fetch (s)"] = [
                None if r.first_fetch is None else _round(r.first_fetch - r.up) for r in restarts
            ]
            res.figures["feeding retries (BatonError)"] = len(self.feed_errors)
        res.figures.update(inserter_figures)

    def _check_chains(self, transitions: Sequence[tuple[Any, ...]]) -> int:
        """SPEC section 4: a chain's links run one at a time, in insertion order: no link
        starts executing before the link inserted before it reached a terminal state."""
        first_exec: dict[int, int] = {}
        first_end: dict[int, int] = {}
        for job_id, _old, new, _attempt, _node, seq in transitions:
            if new == "executing":
                first_exec.setdefault(job_id, seq)
            elif new in TERMINAL_STATES:
                first_end.setdefault(job_id, seq)
        bad = 0
        for key, ids in self.chains.items():
            for before, after in itertools.pairwise(ids):
                started = first_exec.get(after)
                if started is not None and (first_end.get(before) is None or started < first_end[before]):
                    bad += 1
                    if bad <= 5:
                        self.result.violation(
                            f"chain {key}: link {after} started before link {before} (inserted before it) finished"
                        )
        return bad

    def _recorded_results(self) -> dict[int, Any]:
        rows = self.db.query("SELECT job_id, result FROM workflow_nodes WHERE recorded")
        return {job_id: _json(result) for job_id, result in rows}

    def _inserter_outcomes(self, final_state: Callable[[int], str | None]) -> tuple[list[int], dict[str, Any]]:
        """Check the inserter's record: every call that returned ids must have inserted them;
        every call that failed must have raised a BatonError."""
        if not self.inserter_out.exists():
            return [], {}
        res = self.result
        calls = [json.loads(line) for line in self.inserter_out.read_text().splitlines() if line.strip()]
        ok = [c for c in calls if c["ok"]]
        failed = [c for c in calls if not c["ok"]]
        ids = [i for c in ok for i in c["ids"]]
        vanished = [i for i in ids if final_state(i) is None]
        if vanished:
            res.violation(f"{len(vanished)} jobs the inserter was told were inserted vanished: {vanished[:10]}")
        not_baton = [c for c in failed if not c["baton"]]
        for c in not_baton[:5]:
            res.violation(
                f"insert call {c['call']} ({c['method']}) failed with {c['error']}, not a BatonError: "
                f"{c['message']}\n{c.get('traceback') or ''}"
            )
        # A failed call whose jobs exist anyway: the commit happened but its answer was lost.
        failed_calls = {c["call"] for c in failed}
        committed = set()
        if failed_calls:
            args = self.db.query(
                "SELECT args FROM baton_jobs WHERE tags LIKE '%inserter%'"
                if not self.db.postgres
                else "SELECT args FROM baton_jobs WHERE 'inserter' = ANY (tags)"
            )
            committed = {_json(a).get("call") for (a,) in args} & failed_calls
        # Failures of calls made once the server accepted connections again: stale pooled
        # connections handed to callers instead of being checked and replaced.
        restarts = self.result.restarts
        windows = [
            (r.up + 0.2, restarts[i + 1].began if i + 1 < len(restarts) else float("inf"))
            for i, r in enumerate(restarts)
        ]
        after_up = [c for c in failed if any(lo < c["t0"] < hi for lo, hi in windows)]
        # Calls that were under way while the server went down or was down: each of them
        # either raised or returned ids that exist (checked above) - which one is a matter of
        # timing (a call waiting for a connection rides out a short outage).
        across = [c for c in calls if any(c["t0"] < r.up and c["t1"] > r.began for r in restarts)]
        return ids, {
            "insert calls": len(calls),
            "insert calls under way during an outage": len(across),
            "  of which returned ids": sum(1 for c in across if c["ok"]),
            "insert calls that returned ids": len(ok),
            "insert calls that raised": len(failed),
            "  of which not a BatonError": len(not_baton),
            "  of which committed anyway (ambiguous)": len(committed),
            "  of which started after PostgreSQL was back up": len(after_up),
            "inserter errors": dict(Counter(c["error"] for c in failed)),
        }


async def retrying(fn: Callable[..., Any], *args: Any, timeout: float = 60.0) -> Any:
    """Await `fn(*args)`, retrying database errors of the harness's own queries (the server
    may be restarting) for up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await fn(*args)
        except (psycopg.Error, sqlite3.OperationalError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


async def run_scenario(
    db: FaultDatabase, config: ChaosConfig, directory: Path, during: Callable[[Driver], Any] | None = None
) -> ChaosResult:
    """Run one scenario quietly, leaving its report (`report.md`) and the nodes' logs in
    `directory/logs` for post-mortems."""
    log_dir = directory / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    result = await Driver(db, config, log_dir, say=lambda _line: None).run(during)
    (log_dir / "report.md").write_text(report_markdown([result]))
    return result


def assert_no_violations(result: ChaosResult) -> None:
    """Fail with every violation listed (and where the logs are)."""
    assert not result.violations, (
        f"{len(result.violations)} violations ({result.engine}: {scenario_name(result.config)}; report and node "
        f"logs in the test's tmp_path/logs):\n{result.describe_violations()}"
    )


def report_markdown(results: Sequence[ChaosResult], header: str = "") -> str:
    """The chaos report: one table of figures per scenario, then its violations."""
    lines = [header] if header else []
    for res in results:
        cfg = res.config
        lines.append(f"## {res.engine}: {scenario_name(cfg)}")
        lines.append("")
        lines.append(
            f"{cfg.nodes} nodes x {cfg.node_limit} concurrent jobs; {cfg.jobs} jobs and {cfg.workflows} workflows "
            f"fed over {cfg.feed_seconds:g} s"
            + (
                f"; kill -9 every ~{cfg.kill_interval:g} s, restarted after {cfg.restart_delay:g} s"
                if cfg.kill_interval
                else ""
            )
            + (f"; PostgreSQL restarts with outages {list(cfg.pg_restarts)} s" if cfg.pg_restarts else "")
            + ("; retention on (Pruner max_age=1 s, WorkflowHealth prune=True)" if cfg.retention else "")
            + "."
        )
        lines.append("")
        lines.append("| figure | value |")
        lines.append("|---|---|")
        for key, value in res.figures.items():
            lines.append(f"| {key} | {_cell(value)} |")
        lines.append("")
        if res.violations:
            lines.append(f"**{len(res.violations)} violations:**")
            lines.append("")
            lines.extend(f"- {v.splitlines()[0]}" for v in res.violations[:30])
        else:
            lines.append("No violations: nothing lost, nothing completed twice, every workflow announced once.")
        for note in res.notes:
            lines.append(f"\nNote: {note}")
        lines.append("")
    return "\n".join(lines)


def scenario_name(cfg: ChaosConfig) -> str:
    """The scenario's title: its `name`, else the faults it injects."""
    if cfg.name:
        return cfg.name
    parts = []
    if cfg.kill_interval:
        parts.append("node kills")
    if cfg.pg_restarts:
        parts.append("PostgreSQL restarts")
    if cfg.retention:
        parts.append("retention")
    return " + ".join(parts) or "no faults"


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
    if value is None:
        return "-"
    return str(value)
