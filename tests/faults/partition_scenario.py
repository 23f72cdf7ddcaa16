"""The partition scenario (issue #20, docs/lease.md): one of three worker nodes reaches
PostgreSQL through a TCP proxy that is frozen for a while (connections stay open, no byte
passes), the other two reach it directly. Used by tests/faults/test_partition.py and, at the
same size, by bench/partition.py.

1. node-a (through the proxy) starts alone; `jobs` jobs are inserted, each sleeping `sleep`
   seconds before writing its side effect (alternately async and sync workers, from
   partition_node.py); node-b and node-c start paused and are resumed once node-a holds them all;
2. the proxy freezes for `freeze` seconds: node-a cannot renew its producer rows, the Lifeline
   of node-b or node-c rescues its jobs after stale_after (2 s) and they run there;
3. the proxy thaws; the scenario waits until every job is completed and the nodes are quiet.

On SQLite there is no network to cut: the partition is another process holding the database's
write lock for `freeze` seconds (`BEGIN IMMEDIATE`), which cuts every node off at once, so
every node's lease lapses, not only node-a's; who writes first afterwards (node-a renewing or
re-registering, or a Lifeline sweep) is up to SQLite's busy handler.

The figures count, from the side-effect rows the workers write directly (not through the proxy):
the jobs whose side effect ran twice; the side effects of the attempts node-a held at the freeze
written after its lease lapsed (node-a's lease_lost event; without the lease guard, the moment
its rows went stale: its last renewal before the freeze + stale_after); jobs lost; jobs
completed twice (from the `chaos_transitions` probe); fenced acks; and how the jobs came back
(rescued by the Lifeline: reason `orphaned`; handed back by node-a on regaining its lease:
`lease_lost`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import partition_node
from harness import FaultDatabase

import baton

NODE_PROGRAM = str(Path(partition_node.__file__).resolve())


# --------------------------------------------------------------------------- the TCP proxy


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`. `freeze()` stops forwarding bytes in both
    directions while every socket stays open (a partition, not a refused connection: calls
    hang instead of failing); `thaw()` lets the held bytes through."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self.connections = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def frozen(self) -> bool:
        return not self._open.is_set()

    def freeze(self) -> None:
        self._open.clear()

    def thaw(self) -> None:
        self._open.set()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        self.connections += 1
        try:
            try:
                server_reader, server_writer = await asyncio.open_connection(*self.target)
            except OSError:
                client_writer.close()
                return
            pumps = [
                asyncio.ensure_future(self._pump(client_reader, server_writer)),
                asyncio.ensure_future(self._pump(server_reader, client_writer)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                for writer in (client_writer, server_writer):
                    writer.close()
        finally:
            self._links.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                await self._open.wait()
                data = await reader.read(65536)
                if not data:
                    return
                await self._open.wait()  # bytes read just before a freeze wait for the thaw
                writer.write(data)
                await writer.drain()

    async def close(self) -> None:
        self.thaw()
        if self._server is not None:
            self._server.close()
        for task in list(self._links):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)


def hold_write_lock(path: str, seconds: float, locked: threading.Event) -> None:
    """SQLite's partition: hold the write lock of the database file for `seconds`."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(seconds)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def through(url: str, port: int) -> str:
    """`url` with its host and port replaced by 127.0.0.1:`port`."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0] + "@" if len(netloc) == 2 else ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{port}"))


# --------------------------------------------------------------------------- node processes


class Node:
    """A partition_node.py subprocess; stderr goes to `log_path`."""

    def __init__(self, argv: list[str], name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, NODE_PROGRAM, *argv],
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    async def ready(self, timeout: float = 60.0) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        if not line.startswith(b"ready"):
            raise AssertionError(f"node {self.name} did not start:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    async def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(self.proc.communicate), timeout)
        except TimeoutError:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
        self._log.close()
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(Exception):
            self._log.close()


# --------------------------------------------------------------------------- the scenario


@dataclass
class PartitionConfig:
    jobs: int = 20
    sleep: float = 5.0  # each job's work before its side effect
    sleep_min: float | None = None  # if given, the jobs' work is spread evenly from sleep_min to sleep
    freeze: float = 8.0  # how long the proxy holds every byte
    lease_guard: bool = True  # of the cut-off node (the others keep the default)
    settle_timeout: float = 90.0


@dataclass
class PartitionResult:
    config: PartitionConfig
    figures: dict[str, Any] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)


CUT_OFF = "node-a"


async def run_partition(
    db: FaultDatabase, config: PartitionConfig, log_dir: Path, say: Callable[[str], None] = print
) -> PartitionResult:
    """Run the scenario on `db` (migrated, with the evidence probes)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(partition_node.create_side_tables, db.side_url)
    target = urlsplit(db.url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    inserter = baton.Baton(db.url, plugins=[], log_events=False)
    for name in ("partition.async", "partition.sync"):  # known by name to insert them; run by the nodes
        inserter.worker(name=name)(_not_here)
    nodes: list[Node] = []
    result = PartitionResult(config)

    def spawn(name: str, url: str, *extra: str) -> Node:
        node = Node([url, "--side", db.side_url, "--node", name, *extra], name, log_dir / f"{name}.log")
        nodes.append(node)
        return node

    try:
        guard = [] if config.lease_guard else ["--no-lease-guard"]
        url = through(db.url, proxy.port) if db.postgres else db.url
        cut_off = spawn(CUT_OFF, url, "--limit", str(max(config.jobs, 1)), *guard)
        await cut_off.ready()
        others = [spawn(name, db.url, "--paused") for name in ("node-b", "node-c")]
        for node in others:
            await node.ready()
        low = config.sleep if config.sleep_min is None else config.sleep_min
        sleeps = [low + (config.sleep - low) * i / max(1, config.jobs - 1) for i in range(config.jobs)]
        specs = [
            baton.JobSpec(worker=("partition.async" if i % 2 == 0 else "partition.sync"), args={"sleep": sleeps[i]})
            for i in range(config.jobs)
        ]
        ids = sorted(j.id for j in await inserter.insert_all(specs))
        await _wait(lambda: _started_on(db, CUT_OFF) >= len(ids), 60, "node-a to start every job")
        for node in others:
            await inserter.resume_queue("default", node=node.name)
        held = await db.aquery(
            f"SELECT id, attempt FROM baton_jobs WHERE state = 'executing' AND {db.attempted_node()} = ?", (CUT_OFF,)
        )
        updated = "extract(epoch FROM max(updated_at))" if db.postgres else "max(updated_at)"
        last_renewal = await db.aquery(f"SELECT {updated} FROM baton_producers WHERE node = ?", (CUT_OFF,))
        if db.postgres:
            frozen_at = time.time()
            proxy.freeze()
            say(f"froze the proxy with {len(held)} jobs executing on {CUT_OFF}")
            await asyncio.sleep(config.freeze)
            proxy.thaw()
            thawed_at = time.time()
            say(f"thawed the proxy after {thawed_at - frozen_at:.1f}s")
        else:
            locked = threading.Event()
            path = db.url.split(":///", 1)[1]
            holder = asyncio.ensure_future(asyncio.to_thread(hold_write_lock, path, config.freeze, locked))
            await asyncio.to_thread(locked.wait, 30)
            frozen_at = time.time()
            say(f"holding the write lock with {len(held)} jobs executing on {CUT_OFF}")
            await holder
            thawed_at = time.time()
            say(f"released the write lock after {thawed_at - frozen_at:.1f}s")
        settled = await _settle(db, ids, config.settle_timeout)
        await asyncio.sleep(2.0)  # late acks of the healed node, and its regain, land
        for node in nodes:
            await node.stop()
        held_attempts = {(int(i), int(a)) for i, a in held}
        renewed = float(last_renewal[0][0])
        result.figures = await _analyse(db, ids, held_attempts, frozen_at, thawed_at, renewed, settled)
        result.logs = {n.name: n.log_tail() for n in nodes}
    finally:
        for node in nodes:
            node.close()
        await proxy.close()
        await inserter.close()
    return result


def _not_here(job: baton.Job) -> None:
    raise AssertionError("partition jobs run on the partition_node.py processes")


def _started_on(db: FaultDatabase, node: str) -> int:
    rows = db.side("SELECT count(DISTINCT job_id) FROM partition_effects WHERE phase = 'start' AND node = ?", (node,))
    return int(rows[0][0])


async def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def _settle(db: FaultDatabase, ids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = await db.aquery("SELECT count(*) FROM baton_jobs WHERE state <> 'completed'")
        if rows[0][0] == 0:
            return True
        await asyncio.sleep(0.2)
    return False


async def _analyse(
    db: FaultDatabase,
    ids: list[int],
    held: set[tuple[int, int]],
    frozen_at: float,
    thawed_at: float,
    last_renewal: float,
    settled: bool,
) -> dict[str, Any]:
    effects = await asyncio.to_thread(
        db.side, "SELECT job_id, attempt, node, at FROM partition_effects WHERE phase = 'effect' ORDER BY at"
    )
    events = await asyncio.to_thread(db.side, "SELECT kind, node, detail, at FROM partition_events ORDER BY at")
    lost_events = [e for e in events if e[0] == "lease_lost" and e[1] == CUT_OFF]
    regained = [e for e in events if e[0] == "lease_regained" and e[1] == CUT_OFF]
    # When node-a's lease lapsed: its own lease_lost event, else the moment its producer rows
    # went stale (the Lifeline may rescue from then on).
    lapsed_at = lost_events[0][3] if lost_events else last_renewal + partition_node.STALE_AFTER
    per_job: dict[int, list[tuple[int, str, float]]] = {}
    for job_id, attempt, node, at in effects:
        per_job.setdefault(int(job_id), []).append((int(attempt), str(node), float(at)))
    # Side effects of the attempts node-a held at the freeze (its later attempts, after it
    # fetched rescued jobs again, are new attempts and count only towards "run twice").
    given_up = [(j, a, at) for j, rows in per_job.items() for a, n, at in rows if n == CUT_OFF and (j, a) in held]
    cut_off_before = {j for j, _, at in given_up if at <= lapsed_at}
    cut_off_after = {j for j, _, at in given_up if at > lapsed_at}
    final = dict(await db.aquery("SELECT id, state FROM baton_jobs"))
    completions = await db.aquery(
        "SELECT job_id, count(*) FROM chaos_transitions WHERE new_state = 'completed' GROUP BY job_id"
    )
    reasons: dict[str, int] = {}
    for (errors,) in await db.aquery("SELECT errors FROM baton_jobs"):
        for entry in errors if isinstance(errors, list) else json.loads(errors or "[]"):
            reason = str(entry.get("reason"))
            reasons[reason] = reasons.get(reason, 0) + 1
    first = "extract(epoch FROM min(at))" if db.postgres else "min(at)"
    back = await db.aquery(
        f"SELECT {first} FROM chaos_transitions WHERE old_state = 'executing' AND new_state = 'available'"
    )
    first_back = float(back[0][0]) if back and back[0][0] is not None else None
    lost_detail = json.loads(lost_events[0][2]) if lost_events else {}
    regained_detail = json.loads(regained[0][2]) if regained else {}
    return {
        "jobs": len(ids),
        "held by the cut-off node at the freeze": len(held),
        "freeze (s)": round(thawed_at - frozen_at, 1),
        "cut-off node's lease lapsed after the freeze (s)": round(lapsed_at - frozen_at, 2),
        "first job back to available after the lapse (s)": (
            round(first_back - lapsed_at, 2) if first_back is not None else "-"
        ),
        "held attempts' side effects before the lapse": len(cut_off_before),
        "held attempts without their side effect at the lapse": len(held) - len(cut_off_before),
        "held attempts' side effects after the lapse": len(cut_off_after),
        "jobs run twice (side effect written twice)": sum(1 for rows in per_job.values() if len(rows) > 1),
        "jobs without a side effect": sum(1 for i in ids if i not in per_job),
        "jobs lost (not completed)": sum(1 for i in ids if final.get(i) != "completed"),
        "jobs completed twice": sum(1 for _, n in completions if n > 1),
        "rescued by the Lifeline (orphaned)": reasons.get("orphaned", 0),
        "handed back on regaining the lease (lease_lost)": reasons.get("lease_lost", 0),
        "fenced acks of the cut-off node": sum(1 for e in events if e[0] == "fenced" and e[1] == CUT_OFF),
        "lease_lost events": len(lost_events),
        "async jobs cancelled / sync jobs flagged": (
            f"{len(lost_detail.get('cancelled', []))} / {len(lost_detail.get('flagged', []))}" if lost_events else "-"
        ),
        "lease_regained: cut off for (s)": round(regained_detail["cut_off"], 1) if regained else "-",
        "settled": settled,
    }
