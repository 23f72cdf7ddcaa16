"""Worker nodes for the self-healing tests, run as real subprocesses (so they can be killed
with SIGKILL, frozen with SIGSTOP) and importable by the tests (same worker names, same side
tables).

    python tests/heal_nodes.py worker URL [--limit N] [--node NAME] [--no-lease-guard] [--linger S]
    python tests/heal_nodes.py chain  URL [--node NAME]          # queue limit 10

A node builds a Baton app on URL with queues {"default": limit}, refresh_interval=0.5,
stale_after=2 and plugins=[] (so only the built-in Stager runs: nothing heals it), prints
"ready" once started, and runs until SIGTERM (graceful stop) or SIGKILL. --no-lease-guard
builds it with lease_guard=False (a node that never gives its jobs up on its own, as before
docs/lease.md), so a test can exercise the fence behind the lease. --linger S keeps the process
alive S seconds after its Baton stopped (printing "stopped" first), as a program that calls
app.stop() and goes on (an ASGI server's lifespan) does: its worker threads run on meanwhile.

Workers (by name, so any app registering them runs the same jobs):
- `heal.sleeper`: records each execution into `exec_log(job_id, pid, attempt, phase, node)`
  (phase "start" before the body, "end" after it), sleeps `args.sleep` (default 30) seconds.
- `heal.poller`: a sync worker that polls `job.cancelled()` every 20 ms for `args.sleep`
  (default 30) seconds, recording phase "start", then "cancelled" (and raising
  `job.raise_if_cancelled()`) once it sees the attempt taken away, else "end".
- `heal.link`: chained by `args.key`; sleeps `args.sleep` (default 0.01) and records
  `chain_log(key, seq, started, ended, pid)`.
The ("baton", "job", "fenced") events of the node are recorded into `fenced(job_id, reason, node)`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

SRC = Path(__file__).resolve().parent.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

import baton  # noqa: E402

SIDE_TABLES = {
    "exec_log": "job_id BIGINT, pid INTEGER, attempt INTEGER, phase TEXT, node TEXT, at DOUBLE PRECISION",
    "fenced": "job_id BIGINT, reason TEXT, node TEXT",
    "chain_log": "key TEXT, seq INTEGER, started DOUBLE PRECISION, ended DOUBLE PRECISION, pid INTEGER",
}


# --------------------------------------------------------------------------- side tables


def _sqlite_path(url: str) -> str:
    rest = url[len("sqlite:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    if rest.startswith("/"):
        rest = rest[1:]
    return rest


def side_sql(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the test database outside Baton (qmark placeholders)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(_sqlite_path(url), timeout=30, isolation_level=None)
        try:
            cur = conn.execute(sql, tuple(params))
            return cur.fetchall() if cur.description else []
        finally:
            conn.close()
    with psycopg.connect(url, autocommit=True) as pg:
        cur = pg.execute(sql.replace("?", "%s"), tuple(params))  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def now_sql(url: str) -> str:
    """The database clock as an SQL expression of the engine behind `url`."""
    return "((julianday('now') - 2440587.5) * 86400.0)" if url.startswith("sqlite") else "now()"


def ago_sql(url: str, seconds: float) -> str:
    """`seconds` before the database clock, as an SQL expression."""
    if url.startswith("sqlite"):
        return f"({now_sql(url)} - {float(seconds)!r})"
    return f"(now() - make_interval(secs => {float(seconds)!r}))"


def create_side_tables(url: str) -> None:
    """(Re)create the side tables the workers write to."""
    for table, columns in SIDE_TABLES.items():
        side_sql(url, f"DROP TABLE IF EXISTS {table}")
        side_sql(url, f"CREATE TABLE {table} ({columns})")


# --------------------------------------------------------------------------- workers


def register(app: baton.Baton, *, sleep: float | None = None) -> dict[str, Any]:
    """Declare the test workers on `app`; `sleep` overrides every job's sleep (short jobs for a
    healthy node). Returns the worker handles by name."""
    url, node, pid = app.url, app.node, os.getpid()

    @app.worker(name="heal.sleeper")
    def sleeper(job: baton.Job) -> Any:
        side_sql(
            url, "INSERT INTO exec_log VALUES (?, ?, ?, 'start', ?, ?)", (job.id, pid, job.attempt, node, time.time())
        )
        time.sleep(sleep if sleep is not None else float(job.args.get("sleep", 30)))
        side_sql(
            url, "INSERT INTO exec_log VALUES (?, ?, ?, 'end', ?, ?)", (job.id, pid, job.attempt, node, time.time())
        )
        return job.args.get("n")

    @app.worker(name="heal.poller")
    def poller(job: baton.Job) -> Any:
        def record(phase: str) -> None:
            side_sql(
                url,
                "INSERT INTO exec_log VALUES (?, ?, ?, ?, ?, ?)",
                (job.id, pid, job.attempt, phase, node, time.time()),
            )

        record("start")
        end = time.monotonic() + (sleep if sleep is not None else float(job.args.get("sleep", 30)))
        while time.monotonic() < end:
            if job.cancelled():
                record("cancelled")
                job.raise_if_cancelled()
            time.sleep(0.02)
        record("end")
        return job.args.get("n")

    @app.worker(name="heal.link", chain_by=["args.key"])
    def link(job: baton.Job) -> None:
        started = time.time()
        time.sleep(float(job.args.get("sleep", 0.01)))
        ended = time.time()
        side_sql(
            url, "INSERT INTO chain_log VALUES (?, ?, ?, ?, ?)", (job.args["key"], job.args["seq"], started, ended, pid)
        )

    return {"heal.sleeper": sleeper, "heal.poller": poller, "heal.link": link}


def record_fenced(app: baton.Baton) -> str:
    """Record this process's fenced-ack events into the `fenced` side table."""
    handler_id = f"heal-fenced-{os.getpid()}-{id(app)}"

    def on_fenced(_event: Any, _measurements: Any, metadata: Any) -> None:
        side_sql(app.url, "INSERT INTO fenced VALUES (?, ?, ?)", (metadata["job_id"], metadata["reason"], app.node))

    baton.telemetry.attach(handler_id, ("baton", "job", "fenced"), on_fenced)
    return handler_id


# --------------------------------------------------------------------------- spawning (tests)


class NodeProcess:
    """A node subprocess started by a test: `await node.ready()`, `node.signal(SIGKILL)`,
    `await node.terminate()`; stderr goes to `log_path` for post-mortems."""

    def __init__(
        self,
        mode: str,
        url: str,
        *,
        limit: int | None = None,
        node: str | None = None,
        log_path: Path | None = None,
        lease_guard: bool = True,
        linger: float | None = None,
    ) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), mode, url]
        if not lease_guard:
            cmd.append("--no-lease-guard")
        if linger is not None:
            cmd += ["--linger", str(linger)]
        if limit is not None:
            cmd += ["--limit", str(limit)]
        if node is not None:
            cmd += ["--node", node]
        self.node = node
        self.log_path = log_path
        self._log = open(log_path, "wb") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log)
        self.pid = self.proc.pid

    async def ready(self, timeout: float = 30.0) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        if line.strip() != b"ready":
            raise AssertionError(f"node {self.node} did not start (exit {self.proc.poll()}): {self.stderr()}")

    def stderr(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-4000:]

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    async def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (graceful stop) and wait; SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)
        except TimeoutError:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
        self.close()
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if hasattr(self._log, "close"):
            self._log.close()


# --------------------------------------------------------------------------- node program


async def run_node(url: str, limit: int, node: str | None, lease_guard: bool = True, linger: float = 0.0) -> None:
    app = baton.Baton(
        url,
        queues={"default": limit},
        refresh_interval=0.5,
        stale_after=2,
        shutdown_grace=1,
        plugins=[],
        node=node,
        log_events=False,
        lease_guard=lease_guard,
    )
    register(app)
    record_fenced(app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with app:
        print("ready", flush=True)
        await stop.wait()
    if linger > 0:
        print("stopped", flush=True)
        await asyncio.sleep(linger)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["worker", "chain"])
    parser.add_argument("url")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--node", default=None)
    parser.add_argument("--no-lease-guard", action="store_true")
    parser.add_argument("--linger", type=float, default=0.0)
    args = parser.parse_args(argv)
    limit = args.limit if args.limit is not None else (10 if args.mode == "chain" else 5)
    asyncio.run(run_node(args.url, limit, args.node, lease_guard=not args.no_lease_guard, linger=args.linger))


if __name__ == "__main__":
    main()
