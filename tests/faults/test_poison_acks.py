"""A job's outcome that the database cannot store must not stop its node (SPEC sections 2 and 7).

A worker's exception message, traceback or recorded result is written with the job's ack.
Text PostgreSQL cannot store (a NUL character) or that is not valid UTF-8 at all (a lone
surrogate, as `os.fsdecode` produces for an undecodable file name) makes that write fail. The
job must still end (its error recorded in a form that can be stored), and above all the acks
of every other job batched with it must still be written: a node that retries one unwritable
batch forever leaves all its later jobs `executing` while it keeps heartbeating, so the
Lifeline never rescues them either.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from harness import wait_for

import baton
from baton.plugins import Stager

pytestmark = pytest.mark.faults

SURROGATE = os.fsdecode(b"caf\xe9.txt")  # 'caf\udce9.txt': an undecodable file name


def poison(kind: str) -> object:
    """What the poisoned worker does."""
    if kind == "NUL in the error":
        raise ValueError("unexpected byte \x00 in the upload")
    if kind == "surrogate in the error":
        raise FileNotFoundError(f"no such file: {SURROGATE}")
    if kind == "NUL in a recorded result":
        return {"text": "a\x00b"}
    if kind == "surrogate in a recorded result":
        return {"name": SURROGATE}
    raise AssertionError(kind)


CASES = [
    ("postgres", "NUL in the error"),
    ("postgres", "surrogate in the error"),
    ("postgres", "NUL in a recorded result"),
    ("postgres", "surrogate in a recorded result"),
    # SQLite stores NUL characters; text that is not UTF-8 it cannot store either.
    ("sqlite", "surrogate in the error"),
    ("sqlite", "surrogate in a recorded result"),
]


@pytest.mark.parametrize(("engine", "kind"), CASES)
async def test_one_unstorable_outcome_does_not_stop_a_node_from_acking_the_others(fault_db, engine, kind):
    db = await fault_db(engine)
    app = baton.Baton(
        db.url,
        queues={"default": 5},
        plugins=[Stager(interval=0.2)],
        refresh_interval=0.5,
        stale_after=2,
        poll_interval=0.2,
        shutdown_grace=1,
        log_events=False,
    )

    @app.worker(name="poison.bad", max_attempts=1, record=True)
    def bad(job: baton.Job) -> object:
        return poison(kind)

    @app.worker(name="poison.good")
    def good(job: baton.Job) -> None:
        return None

    async with app:
        (poisoned,) = await app.insert_all([bad.new({})])
        await asyncio.sleep(0.5)  # its ack is in flight (and failing) when the others finish
        others = await app.insert_all([good.new({"i": i}) for i in range(20)])

        async def others_done() -> bool:
            jobs = await app.list_jobs(ids=[j.id for j in others])
            return all(j.state == "completed" for j in jobs)

        try:
            await wait_for(others_done, timeout=4, interval=0.1)
        except AssertionError:
            counts = await app.count_jobs()
            pending = app._node.acker.pending if app._node is not None else "?"
            pytest.fail(
                f"{kind}: one unwritable ack blocked the node's acker ({pending} acks pending, jobs by state "
                f"{counts}); the node keeps heartbeating, so nothing rescues these jobs"
            )
        job = await wait_for(lambda: _terminal(app, poisoned.id), timeout=5)
        assert job.state in ("completed", "discarded"), job


async def _terminal(app: baton.Baton, job_id: int) -> baton.Job | None:
    job = await app.get_job(job_id)
    return job if job is not None and job.state in ("completed", "discarded", "cancelled") else None
