"""A node whose address space is capped (RLIMIT_AS) while one of its jobs holds all the memory
it can get: short jobs inserted meanwhile need the worker-thread pool to grow, and no thread
can be started (no memory for its stack). Run by test_overload.py as its own process:

    python starved_node.py URL LIMIT_MB

Prints one JSON line: how many of the short jobs completed, and the leaking job's state and
errors. The program never pre-imports anything big after the cap is set."""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any

import baton


async def main(url: str, limit_mb: int) -> dict[str, Any]:
    app = baton.Baton(url, queues={"default": 10}, plugins=[], log_events=False, refresh_interval=0.5, stale_after=5)

    @app.worker(name="starved.leak", max_attempts=1)
    def leak(job: baton.Job) -> None:
        """Takes every MiB it can, holds them for `hold` seconds, then fails (MemoryError)."""
        hoard = []
        try:
            while True:
                hoard.append(bytearray(2**20))
        except MemoryError:
            time.sleep(float(job.args["hold"]))
            raise

    @app.worker(name="starved.short")
    def short(job: baton.Job) -> int:
        time.sleep(0.2)  # 100 of these on 10 slots: the pool grows to 10 threads
        return int(job.args["i"])

    resource.setrlimit(resource.RLIMIT_AS, (limit_mb * 2**20, limit_mb * 2**20))
    async with app:
        leaking = await app.insert(leak.new({"hold": 2.0}))
        await asyncio.sleep(1.5)  # the leak holds all the memory now
        ids = [j.id for j in await app.insert_all([short.new({"i": i}) for i in range(100)])]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [j.state for j in await app.list_jobs(ids=ids, limit=200)]
            if states.count("completed") == len(ids):
                break
            await asyncio.sleep(0.2)
        job = await app.get_job(leaking.id)
    return {
        "completed": states.count("completed"),
        "short": len(ids),
        "leak_state": job.state,
        "leak_errors": [e["error"] for e in job.errors],
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], int(sys.argv[2])))), flush=True)
