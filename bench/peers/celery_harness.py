"""Celery (Redis broker) side of bench/compare.py (runs under bench/.venvs/celery).

Celery keeps no job table, so "finished" is counted by the workers themselves: a
`task_postrun` signal handler counts every task that ran, and a reporter thread sends the
count to the client (`@@ C <n>` on stdout) every 5 ms. With early acks (Celery's default) a
message is acked when the worker reserves it, so this count is the only completion signal.

Settings: broker `redis://127.0.0.1:6379/0`, a fresh queue name per measurement (deleted
afterwards), no result backend and `ignore_result=True`, the `threads` pool with `-c C`
(one process; prefork would mean C processes on a 2-core machine), `worker_prefetch_multiplier
= 64` (Celery's optimizing guide: large prefetch for many short tasks), `--without-mingle
--without-gossip --without-heartbeat`, `-l WARNING`. Celery has no bulk-insert call: the bulk
path is `task.apply_async(..., producer=producer)` in a loop over one producer connection
(what `group.apply_async` does), one LPUSH per job. Single insert: `task.apply_async(...)`.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import redis
from celery import Celery, signals

PREFETCH = 64
SETTINGS = [
    "broker redis://127.0.0.1:6379/0, no result backend, ignore_result=True, a fresh queue per measurement",
    f"worker: -P threads -c C, worker_prefetch_multiplier={PREFETCH}, --without-mingle --without-gossip "
    "--without-heartbeat, -l WARNING, early ack (default)",
    "sync no-op tasks (run in the thread pool); completion counted by a task_postrun signal handler",
    "bulk insert: task.apply_async(producer=...) in a loop on one producer connection (Celery has no bulk "
    "enqueue; group.apply_async does the same)",
    "single insert: task.apply_async(...)",
    "processing runs are filled (untimed) by cloning one published message with fresh ids into a Redis "
    "pipeline, as apply_async costs two round trips per job",
]

_first = common.FirstJob()


def make_app(broker: str, queue: str) -> Celery:
    app = Celery("bench", broker=broker)
    app.conf.update(
        task_default_queue=queue,
        task_ignore_result=True,
        result_backend=None,
        worker_prefetch_multiplier=PREFETCH,
        worker_redirect_stdouts=False,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )

    @app.task(name="bench.noop", ignore_result=True)
    def noop(n: int) -> None:
        _first()

    @app.task(name="bench.probe", ignore_result=True)
    def probe(n: int) -> None:
        common.probe_started(n)

    return app


# --------------------------------------------------------------------------- node


def node(cfg: dict[str, Any]) -> None:
    common.quiet_logging("celery", "kombu")
    app = make_app(cfg["url"], cfg["queue"])
    done = itertools.count(1)
    state = {"n": 0}

    @signals.task_postrun.connect(weak=False)
    def _count(**_: Any) -> None:
        state["n"] = next(done)

    def reporter() -> None:
        last = -1
        while True:
            n = state["n"]
            if n != last:
                common.emit("C", n)
                last = n
            time.sleep(0.005)

    common.wait_for_go()
    threading.Thread(target=reporter, daemon=True).start()
    app.worker_main(
        [
            "worker",
            "-P",
            "threads",
            "-c",
            str(int(cfg["concurrency"])),
            "-Q",
            cfg["queue"],
            "-n",
            f"bench{os.getpid()}@localhost",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ]
    )


# --------------------------------------------------------------------------- client


class CelerySystem:
    name = "celery"
    script = __file__

    def __init__(self, params: dict[str, Any]) -> None:
        self.url = params["url"]
        self.queue = f"bench-{uuid.uuid4().hex[:12]}"
        self.app: Celery | None = None

    async def setup(self) -> None:
        common.quiet_logging("celery", "kombu")
        self.app = make_app(self.url, self.queue)
        with self.app.producer_or_acquire() as producer:  # connect outside the timings
            producer.connection.ensure_connection()

    async def bulk_insert(self, n: int) -> dict[str, float]:
        assert self.app is not None
        noop = self.app.tasks["bench.noop"]
        t0 = time.perf_counter()
        with self.app.producer_or_acquire() as producer:
            for i in range(n):
                noop.apply_async((i,), producer=producer)
        t1 = time.perf_counter()
        return {"seconds": t1 - t0, "build_seconds": 0.0}

    async def seed(self, n: int) -> None:
        """Publish one job the normal way, then clone its Redis message n - 1 times with fresh
        task ids and delivery tags and push them in one pipeline (apply_async costs two round
        trips per job)."""
        assert self.app is not None
        self.app.tasks["bench.noop"].apply_async((0,))
        r = redis.Redis.from_url(self.url)
        try:
            template = json.loads(r.lpop(self.queue))
            pipe = r.pipeline(transaction=False)
            for _ in range(n):
                msg = copy.deepcopy(template)
                task_id = str(uuid.uuid4())
                msg["headers"]["id"] = task_id
                msg["headers"]["root_id"] = task_id
                msg["properties"]["correlation_id"] = task_id
                msg["properties"]["delivery_tag"] = str(uuid.uuid4())
                pipe.lpush(self.queue, json.dumps(msg))
            pipe.execute()
        finally:
            r.close()

    async def enqueue_probe(self, seq: int) -> None:
        assert self.app is not None
        self.app.tasks["bench.probe"].apply_async((seq,))

    async def unfinished(self, nodes: Sequence[common.Node], expected: int) -> bool:
        return sum(n.count for n in nodes) < expected

    async def finished_count(self, nodes: Sequence[common.Node], jobs: int) -> int:
        return sum(n.count for n in nodes)

    async def analyze(self) -> None:
        return None

    def node_config(self, concurrency: int, probe: bool) -> dict[str, Any]:
        return {"url": self.url, "queue": self.queue, "concurrency": concurrency}

    async def close(self) -> None:
        r = redis.Redis.from_url(self.url)
        try:
            r.delete(self.queue, f"_kombu.binding.{self.queue}", f"_kombu.binding_permanent.{self.queue}")
        finally:
            r.close()
        if self.app is not None:
            self.app.close()
            self.app = None


async def m_info(p: dict[str, Any]) -> dict[str, Any]:
    info = common.versions("celery", "kombu", "redis")
    r = redis.Redis.from_url(p.get("url", "redis://127.0.0.1:6379/0"))
    try:
        info["redis-server"] = str(r.info("server").get("redis_version"))
    finally:
        r.close()
    return {"versions": info, "settings": SETTINGS}


if __name__ == "__main__":
    common.main(common.measurements(CelerySystem, m_info), node)
