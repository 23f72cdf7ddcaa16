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


async def test_the_fetch_loops_wakeup_wakes_once_set_and_times_out_otherwise():
    """The producer's wait between fetches (`_Wakeup`, an event whose `set` resolves the
    waiting future itself): set before the wait, during it, or never (the poll timeout)."""
    from baton.runtime.producer import _Wakeup

    wake = _Wakeup()
    wake.set()
    assert await wake.wait(10) is True  # already set: no waiting
    wake.clear()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await wake.wait(0.05) is False  # nobody set it: the poll timeout
    assert loop.time() - t0 >= 0.04
    loop.call_later(0.01, wake.set)
    t0 = loop.time()
    assert await wake.wait(10) is True
    assert loop.time() - t0 < 5
    wake.clear()
    waiting = asyncio.ensure_future(wake.wait(10))  # a stopping producer is cancelled mid-wait
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled()
    wake.set()  # nothing waits any more: no error, and the next wait returns at once
    assert await wake.wait(10) is True
