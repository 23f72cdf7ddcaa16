"""The processes of the fault-injection suite: Baton worker nodes and an inserter, run as real
subprocesses so they can be killed with SIGKILL, plus the workers and the evidence they record.

    python tests/faults/fault_node.py node URL --side SIDE_URL --node NAME [options]
    python tests/faults/fault_node.py inserter URL --out FILE --stop FILE

A **node** builds a Baton app on URL with short self-healing settings (refresh_interval=0.5,
stale_after=2, Stager(interval=0.2), Lifeline(rescue_interval=1), WorkflowHealth(interval=1);
with --retention also Pruner(max_age=1) and WorkflowHealth(prune=True)), prints
`ready NAME` once started, and runs until SIGTERM (graceful stop, then `stopped NAME`) or
SIGKILL. Its logs (warnings and above of the `baton` loggers, with times) go to stderr.

An **inserter** inserts small batches of jobs as fast as it can, through every insert path
(`insert`, `insert_all` by statement and by COPY, `insert_all_sync` from a thread), and writes
each call's outcome as one JSON line to --out (the ids it returned, or the exception type
and whether it was a `BatonError`), until the --stop file exists.

Evidence, written to the side store (SIDE_URL: the same PostgreSQL database, or a separate
SQLite file next to the Baton one, so evidence writes do not compete for Baton's writer lock):

- `chaos_exec(job_id, attempt, worker, node, pid, at)`: one row per execution of a worker
  body, inserted by the body itself before it does anything else (as a job's own business
  write would be);
- `chaos_events(kind, workflow_id, job_id, status, detail, node, pid, at)`: `finished` for each
  ("baton", "workflow", "finished") telemetry event, `delivery` for each
  `on_workflow_finished` callback, `fenced` for each fenced ack, `plugin_exception` for each
  failed plugin sweep, `leader` for leadership changes.

The workers (fixed names, so the test process and the nodes agree) read their behaviour from
the job's args: `{"mode": "ok" | "fail" | "fail_first" | "snooze" | "discard", "sleep": s}`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import queue
import random
import resource
import signal
import sqlite3
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

SRC = Path(__file__).resolve().parents[2] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

import baton  # noqa: E402
from baton.plugins import Lifeline, Pruner, Stager, WorkflowHealth  # noqa: E402

REFRESH_INTERVAL = 0.5
STALE_AFTER = 2.0
RESCUE_INTERVAL = 1.0
HEALTH_INTERVAL = 1.0
STAGER_INTERVAL = 0.2
PRUNE_MAX_AGE = 1.0
RETRY_BACKOFF = 0.2
SNOOZE_SECONDS = 0.3

SIDE_TABLES = {
    "chaos_exec": "job_id BIGINT, attempt INTEGER, worker TEXT, node TEXT, pid INTEGER, at DOUBLE PRECISION",
    "chaos_events": (
        "kind TEXT, workflow_id TEXT, job_id BIGINT, status TEXT, detail TEXT, node TEXT, pid INTEGER, "
        "at DOUBLE PRECISION"
    ),
}

log = logging.getLogger("chaos.node")


# --------------------------------------------------------------------------- the side store


def sqlite_path(url: str) -> str:
    """The file an `sqlite:` URL names (`sqlite:////abs.db` -> `/abs.db`)."""
    rest = url[len("sqlite:") :].split("?", 1)[0]
    if rest.startswith("//"):
        rest = rest[2:]
    if rest.startswith("/"):
        rest = rest[1:]
    return rest


class SideStore:
    """Evidence rows written outside Baton, one connection per thread. Writes are retried for
    a while (the database may be restarting) and raise if it stays unreachable."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")
        self._local = threading.local()
        self._later: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._retrier: threading.Thread | None = None

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.sqlite:
                conn = sqlite3.connect(sqlite_path(self.url), timeout=30, isolation_level=None)
                conn.execute("PRAGMA busy_timeout = 30000")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            else:
                # Committed rows survive a killed client; only a server crash could lose an
                # asynchronous commit, and the suite restarts the server cleanly.
                conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
                conn.execute("SET synchronous_commit = off")
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def execute(self, sql: str, params: Sequence[Any] = (), *, retry_for: float = 0.0) -> list[tuple[Any, ...]]:
        """Run one statement (qmark placeholders); retry connection failures for `retry_for` s."""
        deadline = time.monotonic() + retry_for
        while True:
            try:
                conn = self._conn()
                cur = conn.execute(sql if self.sqlite else sql.replace("?", "%s"), tuple(params))
                return cur.fetchall() if cur.description else []
            except (psycopg.OperationalError, psycopg.InterfaceError, sqlite3.OperationalError):
                self._drop()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def create_tables(self) -> None:
        for table, columns in SIDE_TABLES.items():
            self.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")

    def record_exec(self, job: baton.Job, node: str) -> None:
        self.execute(
            "INSERT INTO chaos_exec VALUES (?, ?, ?, ?, ?, ?)",
            (job.id, job.attempt, job.worker, node, os.getpid(), time.time()),
            retry_for=5.0,
        )

    def record_event(
        self,
        kind: str,
        node: str,
        *,
        workflow_id: str | None = None,
        job_id: int | None = None,
        status: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Record an event; never raises (a raising telemetry handler would be detached) and
        never blocks the caller (often the event loop) on an unreachable database: the row is
        written at once when it can be (durable before the node can be killed), else handed
        to a thread that retries it."""
        row = (kind, workflow_id, job_id, status, detail, node, os.getpid(), time.time())
        try:
            self.execute("INSERT INTO chaos_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
        except Exception:
            self._later.put(row)
            with self._lock:
                if self._retrier is None:
                    self._retrier = threading.Thread(target=self._retry, name="chaos-side-retry", daemon=True)
                    self._retrier.start()

    def _retry(self) -> None:
        while True:
            row = self._later.get()
            try:
                self.execute("INSERT INTO chaos_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row, retry_for=120.0)
            except Exception:
                log.exception("could not record a %s event (workflow %s, job %s)", row[0], row[1], row[2])


SIDE: SideStore | None = None
NODE_NAME = "driver"
_BLOCKED = threading.Event()


# --------------------------------------------------------------------------- workers


def _backoff(_job: baton.Job) -> float:
    return RETRY_BACKOFF


def _before(job: baton.Job) -> Any:
    """Record the execution, then decide the attempt's fate from `args.mode`. Returns a
    Snooze/Discard to return, or None to go on with the body."""
    if SIDE is not None:
        SIDE.record_exec(job, NODE_NAME)
    mode = job.args.get("mode", "ok")
    if mode == "fail":
        raise RuntimeError(f"planned failure of job {job.id} (attempt {job.attempt})")
    if mode == "fail_first" and job.attempt == 1:
        raise RuntimeError(f"planned first-attempt failure of job {job.id}")
    if mode == "snooze" and not job.meta.get("snoozed"):
        return baton.Snooze(SNOOZE_SECONDS)
    if mode == "discard":
        return baton.Discard("planned discard")
    return None


def _result(job: baton.Job) -> int:
    """1 + the sum of the upstream results (so a fan-in step reads every branch; a graft
    dependency counts the results of all its grafted steps)."""
    if job.workflow_id is None:
        return int(job.args.get("n", 0))
    total = 0
    for value in job.upstream_all().values():
        values = value.values() if isinstance(value, dict) else [value]
        total += sum(v for v in values if isinstance(v, int))
    return 1 + total


def _perform(job: baton.Job, result: Callable[[baton.Job], Any] = _result) -> Any:
    """The body of the synchronous chaos workers: the planned fate, else sleep `args.sleep`
    and return `result(job)`."""
    outcome = _before(job)
    if outcome is not None:
        return outcome
    time.sleep(float(job.args.get("sleep", 0.01)))
    return result(job)


def register(app: baton.Baton) -> dict[str, Any]:
    """Declare the chaos workers on `app`; returns the handles by name."""

    @app.worker(name="chaos.work", max_attempts=5, backoff=_backoff)
    def work(job: baton.Job) -> Any:
        return _perform(job)

    @app.worker(name="chaos.awork", max_attempts=5, backoff=_backoff)
    async def awork(job: baton.Job) -> Any:
        outcome = await asyncio.to_thread(_before, job)
        if outcome is not None:
            return outcome
        await asyncio.sleep(float(job.args.get("sleep", 0.01)))
        return _result(job)

    @app.worker(name="chaos.block", max_attempts=5, backoff=_backoff)
    async def block(job: baton.Job) -> Any:
        """Blocks the event loop (time.sleep in an async worker) on its first attempt, at
        most once per process (two blockers on one node would otherwise block it twice)."""
        if SIDE is not None:
            SIDE.record_exec(job, NODE_NAME)
        if job.attempt == 1 and not _BLOCKED.is_set():
            _BLOCKED.set()
            time.sleep(float(job.args.get("block", 6)))
        return job.id

    @app.worker(name="chaos.leak", max_attempts=2, backoff=_backoff)
    def leak(job: baton.Job) -> Any:
        """Allocates and keeps growing until the allocation fails (or `args.max_mb`)."""
        if SIDE is not None:
            SIDE.record_exec(job, NODE_NAME)
        chunk = int(job.args.get("chunk_mb", 16)) * 2**20
        hoard: list[bytes] = []
        for _ in range(int(job.args.get("max_mb", 1 << 20)) // max(1, chunk // 2**20)):
            hoard.append(b"x" * chunk)  # touched pages: real memory, not just address space
            time.sleep(float(job.args.get("pause", 0.005)))
        return len(hoard)

    @app.worker(name="chaos.link", max_attempts=5, backoff=_backoff, chain_by=["args.key"])
    def link(job: baton.Job) -> Any:
        """A chain link: one at a time per `args.key`, in insertion order."""
        return _perform(job, lambda _: None)

    def cleanup_hook(reason: str, job: baton.Job) -> None:
        """A slow clean-up after the step was cancelled by the cascade (a sync hook)."""
        if SIDE is not None:
            SIDE.record_event("hook", NODE_NAME, workflow_id=job.workflow_id, job_id=job.id, detail=reason)
        time.sleep(float(job.args.get("hook_sleep", 0)))

    @app.worker(name="chaos.cleanup", max_attempts=5, backoff=_backoff, after_cancelled=cleanup_hook)
    def cleanup(job: baton.Job) -> Any:
        return _perform(job)

    @app.worker(name="chaos.graft", max_attempts=5, backoff=_backoff)
    def graft(job: baton.Job) -> Any:
        """A graft step: `Graft.map` over `args.k` items (some failing their first attempt), or
        with `args.form == "nested"` a sub-workflow a -> b whose graft step `inner` maps again."""
        return _perform(job, _graft)

    def _graft(job: baton.Job) -> baton.Graft:
        items = job.args["items"]
        if job.args.get("form") == "nested":
            sub = baton.Workflow()
            sub.add("a", work.new({"sleep": 0.01}))
            sub.add("b", awork.new({"sleep": 0.01}), deps=["a"])
            sub.add_graft("inner", graft.new({"items": items, "sleep": 0.01}), deps=["a"])
            return baton.Graft(sub)
        return baton.Graft.map(work, items, max_attempts=3)

    return {
        "chaos.work": work,
        "chaos.awork": awork,
        "chaos.block": block,
        "chaos.leak": leak,
        "chaos.cleanup": cleanup,
        "chaos.link": link,
        "chaos.graft": graft,
    }


# --------------------------------------------------------------------------- node program


def _attach_recorders(app: baton.Baton, side: SideStore, node: str) -> None:
    def on_event(event: tuple[str, ...], _measurements: Any, meta: Any) -> None:
        if event == ("baton", "workflow", "finished"):
            side.record_event("finished", node, workflow_id=meta.get("workflow_id"), status=meta.get("status"))
        elif event == ("baton", "job", "fenced"):
            side.record_event("fenced", node, job_id=meta.get("job_id"), detail=meta.get("reason"))
        elif event == ("baton", "plugin", "exception"):
            side.record_event("plugin_exception", node, detail=f"{meta.get('plugin')}: {meta.get('error')}")
        elif event[:2] == ("baton", "leader"):
            side.record_event("leader", node, detail=event[2])

    baton.telemetry.attach_many(
        f"chaos-{node}-{os.getpid()}",
        [
            ("baton", "workflow", "finished"),
            ("baton", "job", "fenced"),
            ("baton", "plugin", "exception"),
            ("baton", "leader", "elected"),
            ("baton", "leader", "lost"),
        ],
        on_event,
    )

    def on_finished(event: dict[str, Any]) -> None:
        side.record_event("delivery", node, workflow_id=event.get("workflow_id"), status=event.get("status"))

    app.on_workflow_finished(on_finished)


def node_plugins(*, retention: bool, lifeline_timeout: float) -> list[baton.plugins.Plugin]:
    """The self-healing plugins every chaos node runs, with short settings."""
    plugins: list[baton.plugins.Plugin] = [
        Stager(interval=STAGER_INTERVAL),
        Lifeline(rescue_interval=RESCUE_INTERVAL, timeout=lifeline_timeout),
        WorkflowHealth(interval=HEALTH_INTERVAL, prune=retention),
    ]
    if retention:
        plugins.append(Pruner(max_age=PRUNE_MAX_AGE, interval=0.5))
    return plugins


def parse_queues(text: str) -> dict[str, int]:
    """`default:10,other:5` -> {"default": 10, "other": 5}."""
    return {name: int(limit) for name, _, limit in (q.partition(":") for q in text.split(",") if q)}


async def run_node(opts: argparse.Namespace) -> None:
    global SIDE, NODE_NAME
    NODE_NAME = opts.node
    SIDE = SideStore(opts.side)
    options: dict[str, Any] = {}
    if opts.pool_size:
        options["pool_size"] = opts.pool_size
    app = baton.Baton(
        opts.url,
        queues=parse_queues(opts.queues),
        plugins=node_plugins(retention=opts.retention, lifeline_timeout=opts.lifeline_timeout),
        node=opts.node,
        refresh_interval=REFRESH_INTERVAL,
        stale_after=STALE_AFTER,
        shutdown_grace=1,
        poll_interval=0.2,
        log_events=False,
        **options,
    )
    register(app)
    _attach_recorders(app, SIDE, opts.node)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with app:
        print(f"ready {opts.node}", flush=True)
        await stop.wait()
    print(f"stopped {opts.node}", flush=True)


# --------------------------------------------------------------------------- inserter program


async def run_inserter(opts: argparse.Namespace) -> None:
    """Insert through every path from `--lanes` concurrent lanes until the stop file appears;
    one JSON line per call."""
    options: dict[str, Any] = {"pool_size": opts.pool_size} if opts.pool_size else {}
    app = baton.Baton(opts.url, plugins=[], log_events=False, **options)
    work = register(app)["chaos.work"]
    out = open(opts.out, "a", buffering=1)  # noqa: SIM115 - one line per call, flushed at once
    stop = Path(opts.stop)
    calls = iter(range(1, 1 << 62))
    rng = random.Random(os.getpid())

    def specs(call: int, n: int) -> list[baton.JobSpec]:
        return [work.new({"mode": "ok", "sleep": 0.002, "call": call, "i": i}, tags=["inserter"]) for i in range(n)]

    async def lane() -> None:
        while not stop.exists():
            call = next(calls)
            method = ("insert", "insert_all", "insert_all_sync", "insert_all")[call % 4]
            n = 1 if method == "insert" else (250 if call % 40 == 0 else rng.randint(2, 8))  # 250: the COPY path
            record: dict[str, Any] = {"call": call, "method": method, "n": n, "t0": time.time()}
            try:
                if method == "insert":
                    jobs = [await app.insert(specs(call, 1)[0])]
                elif method == "insert_all":
                    jobs = await app.insert_all(specs(call, n))
                else:
                    jobs = await asyncio.to_thread(app.insert_all_sync, specs(call, n))
                record.update(ok=True, ids=[j.id for j in jobs])
            except Exception as exc:
                record.update(
                    ok=False,
                    error=f"{type(exc).__module__}.{type(exc).__qualname__}",
                    baton=isinstance(exc, baton.BatonError),
                    message=str(exc)[:300],
                    traceback=None if isinstance(exc, baton.BatonError) else traceback.format_exc()[-2000:],
                )
            record["t1"] = time.time()
            out.write(json.dumps(record) + "\n")
            await asyncio.sleep(0.02 if record.get("ok") else 0.1)

    await asyncio.gather(*(lane() for _ in range(opts.lanes)))
    out.close()
    await app.close()


# --------------------------------------------------------------------------- main


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("baton.node").setLevel(logging.INFO)
    logging.getLogger("baton.leader").setLevel(logging.INFO)
    logging.getLogger("baton.engine").setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="program", required=True)
    node = sub.add_parser("node")
    node.add_argument("url")
    node.add_argument("--side", required=True)
    node.add_argument("--node", required=True)
    node.add_argument("--queues", default="default:10")
    node.add_argument("--retention", action="store_true")
    node.add_argument("--pool-size", type=int, default=0)
    node.add_argument("--lifeline-timeout", type=float, default=30.0)
    node.add_argument("--memory-limit-mb", type=int, default=0)
    inserter = sub.add_parser("inserter")
    inserter.add_argument("url")
    inserter.add_argument("--out", required=True)
    inserter.add_argument("--stop", required=True)
    inserter.add_argument("--lanes", type=int, default=1)
    inserter.add_argument("--pool-size", type=int, default=0)
    opts = parser.parse_args(argv)
    _configure_logging()
    if opts.program == "node":
        if opts.memory_limit_mb:
            limit = opts.memory_limit_mb * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        asyncio.run(run_node(opts))
    else:
        asyncio.run(run_inserter(opts))


if __name__ == "__main__":
    main()
