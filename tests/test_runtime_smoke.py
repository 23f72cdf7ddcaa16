"""A started node runs inserted jobs through producers and acks them."""

from __future__ import annotations

import asyncio

import baton
from conftest import wait_for


async def test_started_node_runs_sync_and_async_jobs(make_app):
    app = make_app(queues={"default": 5, "other": 2})
    seen: list[int] = []

    @app.worker()
    def sync_add(job: baton.Job) -> int:
        seen.append(job.args["n"])
        return job.args["n"] * 2

    @app.worker(queue="other")
    async def async_add(job: baton.Job) -> int:
        await asyncio.sleep(0)
        seen.append(-job.args["n"])
        return 1

    async with app:
        jobs = await app.insert_all([sync_add.new({"n": i}) for i in range(50)])
        jobs += await app.insert_all([async_add.new({"n": i}) for i in range(1, 20)])
        await wait_for(lambda: app.count_jobs(), timeout=10)

        async def done() -> bool:
            counts = await app.count_jobs()
            return counts.get("completed", 0) == len(jobs)

        await wait_for(done, timeout=15)
    assert sorted(seen) == sorted(list(range(50)) + [-i for i in range(1, 20)])
