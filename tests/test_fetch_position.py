"""A producer that keeps fetching full batches continues after its last job (so a draining
backlog does not rescan the dead head of the fetch index), and scans from the start again to
find a job that became available before that position."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import baton
from baton.store import transitions


def _register(app: baton.Baton) -> Any:
    @app.worker(name="pos.job", queue="default")
    async def job(j: baton.Job) -> None:
        return None

    return job


async def _fetch(app: baton.Baton, limit: int, after: Any = None) -> tuple[list[int], Any]:
    jobs, last = await app.engine.run(transitions.fetch_next, "default", "n", str(uuid.uuid4()), limit, after)
    return [j.id for j in jobs], last


async def test_fetching_after_a_position_continues_in_fetch_order(app: baton.Baton) -> None:
    job = _register(app)
    inserted = [j.id for j in await app.insert_all([job.new({"i": i}, priority=5) for i in range(9)])]
    first, pos = await _fetch(app, 3)
    assert first == inserted[:3]
    second, pos = await _fetch(app, 3, pos)
    assert second == inserted[3:6]
    # A job that sorts before the position (a higher priority) is not seen from it...
    urgent = (await app.insert(job.new({"urgent": True}, priority=1))).id
    third, pos = await _fetch(app, 2, pos)
    assert third == inserted[6:8]
    # ...and is the first one a scan from the start finds.
    again, _ = await _fetch(app, 2)
    assert again == [urgent, inserted[8]]
    assert await _fetch(app, 5) == ([], None)


async def test_position_of_the_last_job_orders_by_priority_then_schedule_then_id(app: baton.Baton) -> None:
    job = _register(app)
    low = await app.insert(job.new({}, priority=9))
    high = await app.insert(job.new({}, priority=0))
    ids, pos = await _fetch(app, 10)
    assert ids == [high.id, low.id]
    assert pos is not None and pos[0] == 9 and pos[2] == low.id


async def test_a_backlog_drained_by_three_producers_runs_every_job_once(make_app: Any) -> None:
    ran: list[int] = []
    apps = []
    for n in range(3):
        app = make_app(queues={"default": 7}, node=f"node-{n}", poll_interval=0.2)

        @app.worker(name="pos.count", queue="default")
        async def count(j: baton.Job) -> None:
            ran.append(j.args["i"])

        apps.append(app)
    await apps[0].insert_all([apps[0].new("pos.count", {"i": i}, priority=i % 3) for i in range(600)])
    async with apps[0], apps[1], apps[2]:
        # Jobs inserted while the backlog drains, some before every producer's position.
        await apps[1].insert_all([apps[1].new("pos.count", {"i": 600 + i}, priority=0) for i in range(60)])
        for _ in range(400):
            if len(ran) >= 660:
                break
            await asyncio.sleep(0.05)
    assert sorted(ran) == list(range(660))
    counts = await apps[0].count_jobs("default")
    assert counts == {"completed": 660}
