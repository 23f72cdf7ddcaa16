"""Plumbing shared by the comparison harnesses in this folder (standard library only).

Every `<system>_harness.py` runs under its own system's virtualenv, so this module may import
nothing but the standard library, and must work on every Python the venvs use (3.11+).

A harness is called as

    python <system>_harness.py <measurement> '<json parameters>'

and prints exactly one JSON line on stdout (the last line; anything before it is ignored by
compare.py). Measurements: `info`, `insert`, `process`, `latency` (and `workflow` for Baton).
The harness itself is the *client*: it installs the schema, inserts, and times. Worker nodes
are separate processes of the same script (`<system>_harness.py node '<json>'`), so peak RSS
is a node's alone and a 2-node run really has two processes.

Node protocol (all lines on the node's stdout prefixed with `@@ `, anything else is ignored):
    node -> client  `@@ ready`            imports done, app built, waiting for `go` on stdin
    client -> node  `go`                  start processing now
    node -> client  `@@ F <time.time()>`  first no-op job started (once)
    node -> client  `@@ L <seq> <time>`   a latency probe job's first line ran at <time>
    node -> client  `@@ C <count>`        jobs finished so far (only systems without a job
                                          table to poll, i.e. Celery)
SIGTERM stops a node gracefully; it is killed after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

PREFIX = "@@ "

# --------------------------------------------------------------------------- node side


def emit(*parts: object) -> None:
    """Write one protocol line to the real stdout (fd 1), unbuffered and atomic, so it works
    from threads, event loops and frameworks that redirect `sys.stdout` (Celery)."""
    os.write(1, (PREFIX + " ".join(str(p) for p in parts) + "\n").encode())


def quiet_logging(*names: str) -> None:
    """Logging at WARNING for the root logger and the named libraries' loggers."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger().setLevel(logging.WARNING)
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)


def wait_for_go() -> float:
    """Tell the client the node is ready, then block until it says `go`."""
    emit("ready")
    line = sys.stdin.readline()
    if not line:
        raise SystemExit(0)
    return time.time()


class FirstJob:
    """Reports the start of the first no-op job of a node, once."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            emit("F", repr(time.time()))


def probe_started(seq: Any) -> None:
    """Called as the first line of a latency probe job."""
    emit("L", seq, repr(time.time()))


def stop_event_on_sigterm(loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    """An event set by SIGTERM/SIGINT, for asyncio nodes."""
    event = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event.set)
    return event


# --------------------------------------------------------------------------- client side


class NodeError(RuntimeError):
    pass


class Node:
    """One worker node: a subprocess of the harness script in `node` mode."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr_path: str, label: str) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self.label = label
        self.queues: dict[str, asyncio.Queue[list[str]]] = {}
        self.count = 0  # latest `C` report
        self.first_job: float | None = None
        self.go_at: float | None = None
        self.other: list[str] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def spawn(cls, script: str, config: dict[str, Any], label: str = "node") -> Node:
        fd, path = tempfile.mkstemp(prefix=f"bench-{label}-", suffix=".stderr")
        stderr = os.fdopen(fd, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            script,
            "node",
            json.dumps(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
            limit=1 << 20,
        )
        stderr.close()
        return cls(proc, path, label)

    def _queue(self, kind: str) -> asyncio.Queue[list[str]]:
        q = self.queues.get(kind)
        if q is None:
            q = self.queues[kind] = asyncio.Queue()
        return q

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip("\n")
            if not line.startswith(PREFIX):
                self.other = [*self.other[-20:], line]
                continue
            kind, *rest = line[len(PREFIX) :].split()
            if kind == "C":
                self.count = int(rest[0])
            elif kind == "F":
                self.first_job = float(rest[0])
            else:
                self._queue(kind).put_nowait(rest)

    def stderr_tail(self, lines: int = 30) -> str:
        try:
            with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.proc.returncode is not None:
            raise NodeError(f"{self.label} exited with {self.proc.returncode}:\n{self.stderr_tail()}")

    async def expect(self, kind: str, timeout: float) -> list[str]:
        """The next `kind` message, failing if the node dies or `timeout` passes."""
        q = self._queue(kind)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await asyncio.wait_for(q.get(), timeout=min(0.2, max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                self.check_alive()
                if time.monotonic() >= deadline:
                    raise NodeError(f"{self.label}: no `{kind}` within {timeout}s\n{self.stderr_tail()}") from None

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.go_at = time.time()
        self.proc.stdin.write(b"go\n")

    def vmhwm_kib(self) -> int | None:
        """Peak resident set size of the node process so far (VmHWM), in KiB."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the node process has used so far."""
        stat = process_stat(self.proc.pid)
        return None if stat is None else stat[1]

    async def stop(self, grace: float = 10.0) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        with contextlib.suppress(OSError):
            os.unlink(self.stderr_path)


class System(Protocol):
    """What a harness provides to the generic measurements below (client side)."""

    name: str
    script: str

    async def setup(self) -> None: ...  # schema, connections
    async def bulk_insert(self, n: int) -> dict[str, float]: ...  # {"seconds", "build_seconds"}
    # optional: `async def seed(self, n)`, a faster way to fill the queue before a processing run
    # (not timed) when the documented bulk path is one round trip per job; it must create exactly
    # the jobs bulk_insert would.
    async def enqueue_probe(self, seq: int) -> None: ...  # one job, the normal single-insert call
    async def unfinished(self, nodes: Sequence[Node], expected: int) -> bool: ...
    async def analyze(self) -> None: ...  # ANALYZE the job tables (no-op without a DB)
    def node_config(self, concurrency: int, probe: bool) -> dict[str, Any]: ...
    async def close(self) -> None: ...


async def start_nodes(
    system: System, count: int, concurrency: int, probe: bool = False, kind: str = "async"
) -> list[Node]:
    """Spawn `count` node processes; `kind` says whether their no-op worker is an `async def`
    or a plain `def` (a sync worker, run however the system runs those)."""
    config = {**system.node_config(concurrency, probe), "kind": kind}
    nodes = [await Node.spawn(system.script, config, label=f"{system.name}-node{i}") for i in range(count)]
    try:
        for node in nodes:
            await node.expect("ready", timeout=60)
    except BaseException:
        await stop_nodes(nodes)
        raise
    return nodes


async def stop_nodes(nodes: Sequence[Node]) -> None:
    await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


async def wait_done(
    system: System, nodes: Sequence[Node], expected: int, timeout: float, interval: float = 0.01
) -> bool:
    """Poll until no job is unfinished (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while await system.unfinished(nodes, expected):
        for n in nodes:
            n.check_alive()
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


async def measure_insert(system: System, jobs: int) -> dict[str, Any]:
    await system.setup()
    try:
        r = await system.bulk_insert(jobs)
    finally:
        await system.close()
    total = r["seconds"] + r["build_seconds"]
    return {
        "jobs": jobs,
        "jobs_per_s": jobs / total,
        "seconds": total,
        "insert_only_jobs_per_s": jobs / r["seconds"],
        "build_seconds": r["build_seconds"],
    }


# The local server processes a run makes work: PostgreSQL's (the postmaster's children, whose
# `comm` is "postgres": backends, WAL writer, autovacuum, checkpointer) and Redis (Celery's broker).
SERVER_PROCESSES = frozenset({"postgres", "redis-server"})


def process_stat(pid: int) -> tuple[str, float] | None:
    """(command name, user + system CPU seconds so far) of a process from /proc/<pid>/stat,
    or None once it has gone. (benchlib has the same reading; this module may not import it.)"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            head, _, tail = f.read().rpartition(")")
        fields = tail.split()
        return head.partition("(")[2], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def server_cpu() -> dict[int, float]:
    """CPU seconds (user + system) each local server process has used so far, by pid."""
    out: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := process_stat(int(entry.name))) and stat[0] in SERVER_PROCESSES:
            out[int(entry.name)] = stat[1]
    return out


def server_cpu_since(before: dict[int, float]) -> float:
    """Server CPU seconds used since `before` (a process that exited meanwhile is not counted)."""
    return sum(t - before.get(pid, 0.0) for pid, t in server_cpu().items())


def machine_ticks() -> tuple[int, int]:
    """(all, idle) CPU ticks of the machine so far, over every core (/proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values), values[3] + values[4]  # idle + iowait


def _busy_cores(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """Average busy cores between two `machine_ticks()` readings."""
    total, idle = after[0] - before[0], after[1] - before[1]
    return (1 - idle / total) * (os.cpu_count() or 1) if total > 0 else None


async def measure_process(
    system: System,
    jobs: int,
    concurrency: int,
    nodes: int,
    max_seconds: float = 600,
    analyze: bool = False,
    kind: str = "async",
) -> dict[str, Any]:
    """Insert `jobs` no-op jobs, start `nodes` nodes at `concurrency` (all imports and setup
    done before the clock starts), time `go` -> every job finished (acked in the database).

    A system that has not finished after `max_seconds` is stopped there and its rate is the
    jobs finished by then over `max_seconds` (`capped: true`), so one slow system cannot
    stretch the whole comparison. `analyze` runs ANALYZE between the insert and the start."""
    await system.setup()
    running: list[Node] = []
    try:
        seed = getattr(system, "seed", None)
        await (seed(jobs) if seed is not None else system.bulk_insert(jobs))
        if analyze:
            await system.analyze()
        running = await start_nodes(system, nodes, concurrency, kind=kind)
        cpu0 = [n.cpu_seconds() for n in running]
        server0, machine0 = server_cpu(), machine_ticks()
        t0 = time.perf_counter()
        wall0 = time.time()
        for n in running:
            n.go()
        done = await wait_done(system, running, jobs, max_seconds)
        seconds = time.perf_counter() - t0
        server_s, machine1 = server_cpu_since(server0), machine_ticks()
        finished = jobs if done else await system.finished_count(running, jobs)
        rss = [n.vmhwm_kib() for n in running]
        cpu = [
            (b - a) if a is not None and b is not None else None
            for a, b in zip(cpu0, [n.cpu_seconds() for n in running], strict=True)
        ]
        firsts = [n.first_job - wall0 for n in running if n.first_job is not None]
    finally:
        await stop_nodes(running)
        await system.close()
    node_cpu = sum(c for c in cpu if c is not None)
    return {
        "jobs": jobs,
        "finished": finished,
        "node_cpu_s": node_cpu,
        "node_cpu_ms_per_1000_jobs": node_cpu / finished * 1e6 if finished else None,
        "server_cpu_s": server_s,
        "server_cpu_ms_per_1000_jobs": server_s / finished * 1e6 if finished else None,
        # Average busy cores of the whole machine over the run (nodes, server, this client).
        "machine_busy_cores": _busy_cores(machine0, machine1),
        "capped": not done,
        "concurrency": concurrency,
        "nodes": nodes,
        "analyze": analyze,
        "seconds": seconds,
        "jobs_per_s": finished / seconds,
        "rss_kib": rss,
        "first_job_s": min(firsts) if firsts else None,
    }


async def measure_latency(
    system: System, samples: int, warmup: int, concurrency: int = 10, settle: float = 1.0
) -> dict[str, Any]:
    """One node on an idle queue; insert one probe at a time from this (client) process.
    Latency = wall clock just before the enqueue call -> wall clock at the probe's first line
    in the node process. After each probe the client waits until the job is finished (acked;
    at most 50 ms, as PgQueuer for one buffers acks for 100 ms) and then a random 0-5 ms, so
    the queue is idle again and inserts don't phase-lock with any timer."""
    await system.setup()
    nodes: list[Node] = []
    latencies: list[float] = []
    calls: list[float] = []
    try:
        nodes = await start_nodes(system, 1, concurrency, probe=True)
        nodes[0].go()
        await asyncio.sleep(settle)  # let the node finish starting (LISTEN, first fetch)
        for seq in range(1, warmup + samples + 1):
            t0 = time.time()
            await system.enqueue_probe(seq)
            t1 = time.time()
            got_seq, t_start = await nodes[0].expect("L", timeout=30)
            if int(got_seq) != seq:
                raise NodeError(f"probe {got_seq} arrived while waiting for {seq}")
            if seq > warmup:
                latencies.append(float(t_start) - t0)
                calls.append(t1 - t0)
            deadline = time.monotonic() + 0.05
            while await system.unfinished(nodes, seq) and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
            await asyncio.sleep(random.uniform(0, 0.005))
        rss = [n.vmhwm_kib() for n in nodes]
    finally:
        await stop_nodes(nodes)
        await system.close()
    return {
        "samples": samples,
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "mean_s": sum(latencies) / len(latencies),
        "max_s": max(latencies),
        "enqueue_call_p50_s": percentile(calls, 50),
        "rss_kib": rss,
    }


Measurement = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def measurements(make: Callable[[dict[str, Any]], System], info: Measurement) -> dict[str, Measurement]:
    """The standard measurements of a harness whose client is `make(params)`."""

    async def insert(p: dict[str, Any]) -> dict[str, Any]:
        return await measure_insert(make(p), int(p["jobs"]))

    async def process(p: dict[str, Any]) -> dict[str, Any]:
        return await measure_process(
            make(p),
            int(p["jobs"]),
            int(p["concurrency"]),
            int(p.get("nodes", 1)),
            analyze=bool(p.get("analyze", False)),
            max_seconds=float(p.get("max_seconds", 600)),
            kind=str(p.get("kind", "async")),
        )

    async def latency(p: dict[str, Any]) -> dict[str, Any]:
        return await measure_latency(make(p), int(p["samples"]), int(p.get("warmup", 10)))

    return {"info": info, "insert": insert, "process": process, "latency": latency}


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def versions(*dists: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for d in dists:
        try:
            out[d] = version(d)
        except PackageNotFoundError:
            out[d] = "not installed"
    return out


def main(measurements: dict[str, Measurement], node: Callable[[dict[str, Any]], None]) -> None:
    """The harness entry point: dispatch argv, print one JSON line."""
    if len(sys.argv) < 2:
        raise SystemExit(f"usage: {sys.argv[0]} <{'|'.join(['node', *measurements])}> '<json>'")
    what = sys.argv[1]
    params = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    if what == "node":
        node(params)
        return
    if what not in measurements:
        raise SystemExit(f"unknown measurement {what!r}; one of {sorted(measurements)}")
    try:
        result = asyncio.run(measurements[what](params))
        result = {"ok": True, "measurement": what, **result}
    except Exception as exc:  # reported to compare.py, which carries on with the next figure
        import traceback

        traceback.print_exc()
        result = {"ok": False, "measurement": what, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
