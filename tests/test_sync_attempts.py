"""Sync workers without a timeout run on a started node with no asyncio Task per attempt
(`Executor.start_in_threads`): each attempt is prepared on the loop, runs and becomes its ack in
a pool thread, and comes back to the loop in a batch. Everything an attempt with a Task does
still holds: every outcome, the telemetry events on the loop's thread, cancellation, a
graceful stop that waits for them and hands the unfinished ones back."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import baton
from baton.runtime.executor import ThreadAttempt
from conftest import wait_for
from thread_faults import refuse_thread_starts

START, STOP, EXCEPTION = ("baton", "job", "start"), ("baton", "job", "stop"), ("baton", "job", "exception")


def _producer(app: baton.Baton, queue: str = "default") -> Any:
    assert app._node is not None
    return app._node.producers[queue]


async def test_every_outcome_of_a_sync_attempt_without_a_task(make_app: Callable[..., baton.Baton], events: Any):
    events.attach(START, STOP, EXCEPTION)
    loop_thread = threading.get_ident()
    handler_threads: set[int] = set()
    baton.telemetry.attach_many(
        "test-sync-attempt-threads", [START, STOP, EXCEPTION], lambda *_: handler_threads.add(threading.get_ident())
    )
    app = make_app(queues={"default": 10})
    worker_threads: set[int] = set()
    gate = threading.Event()
    handles: dict[int, Any] = {}
    tasks: set[str] = set()

    @app.worker(name="sa.work", record=True, backoff=lambda job: 30.0)
    def work(job: baton.Job) -> Any:
        worker_threads.add(threading.get_ident())
        gate.wait(5)
        kind = job.args["kind"]
        if kind == "raise":
            raise ValueError("bad input")
        if kind == "exit":
            sys.exit(3)
        if kind == "snooze":
            return baton.Snooze(60)
        if kind == "cancel":
            raise baton.Cancel("no longer needed")
        if kind == "discard":
            return baton.Discard("pointless")
        if kind == "usage":
            job.record_usage(model="m", input_tokens=3, output_tokens=4)
        return {"kind": kind}

    kinds = ["ok", "raise", "exit", "snooze", "cancel", "discard", "usage"]
    try:
        async with app:
            jobs = await app.insert_all([work.new({"kind": k}) for k in kinds])
            ids = [j.id for j in jobs]
            producer = _producer(app)
            await wait_for(lambda: len(producer.running) == len(kinds), 10)
            handles.update(producer.running)
            tasks.update(t.get_name() for t in asyncio.all_tasks())
            gate.set()

            async def settled() -> bool:
                return all(j.state != "executing" for j in await app.list_jobs(ids=ids))

            await wait_for(settled, 10)
    finally:
        baton.telemetry.detach("test-sync-attempt-threads")

    assert all(isinstance(h, ThreadAttempt) for h in handles.values())
    assert not {f"baton-job-{i}" for i in ids} & tasks, "no asyncio Task per sync attempt"
    assert all(h.done() and not h.cancelled() for h in handles.values())
    assert loop_thread not in worker_threads
    assert handler_threads == {loop_thread}, "telemetry handlers run on the loop's thread"

    stored = {j.args["kind"]: await app.get_job(j.id) for j in jobs}
    assert stored["ok"].state == "completed" and stored["ok"].meta["result"] == {"kind": "ok"}
    assert stored["raise"].state == "retryable" and "ValueError: bad input" in stored["raise"].errors[0]["error"]
    assert "Traceback" in (stored["raise"].errors[0]["traceback"] or "")
    assert stored["raise"].scheduled_at is not None
    assert (stored["raise"].scheduled_at - stored["raise"].attempted_at).total_seconds() > 20  # the custom backoff
    assert stored["exit"].state == "retryable" and "SystemExit" in stored["exit"].errors[0]["error"]
    assert stored["snooze"].state == "scheduled" and stored["snooze"].meta["snoozed"] == 1
    assert stored["cancel"].state == "cancelled"
    assert stored["discard"].state == "discarded"
    assert stored["usage"].state == "completed"
    usage = (await app.usage_by_model())["m"]
    assert (usage["calls"], usage["input_tokens"], usage["output_tokens"]) == (1, 3, 4)

    by_id = {j.id: j.args["kind"] for j in jobs}
    assert sorted(by_id[md["job"].id] for _, md in events.of(START)) == sorted(kinds)
    ends = {by_id[md["job"].id]: (event, m, md) for event in (STOP, EXCEPTION) for m, md in events.of(event)}
    assert {k for k, (event, _, _) in ends.items() if event == EXCEPTION} == {"raise", "exit"}
    assert {k: md["state"] for k, (_, _, md) in ends.items()} == {
        "ok": "completed",
        "raise": "retryable",
        "exit": "retryable",
        "snooze": "scheduled",
        "cancel": "cancelled",
        "discard": "discarded",
        "usage": "completed",
    }
    assert all(m["duration"] >= 0 for _, m, _ in ends.values())
    assert "ValueError" in ends["raise"][2]["traceback"]


async def test_a_cancelled_sync_attempt_frees_its_slot_and_its_late_outcome_is_ignored(
    make_app: Callable[..., baton.Baton], events: Any
):
    events.attach(STOP, EXCEPTION)
    app = make_app(queues={"default": 1})
    started = threading.Event()
    release = threading.Event()
    saw: list[bool] = []

    @app.worker(name="sa.stubborn")
    def stubborn(job: baton.Job) -> str:
        started.set()
        release.wait(10)  # ignores the cancel until released
        saw.append(job.cancelled())
        return "late"

    @app.worker(name="sa.quick")
    def quick(job: baton.Job) -> str:
        return "quick"

    async with app:
        slow = await app.insert(stubborn.new({}))
        assert await asyncio.to_thread(started.wait, 5)
        (handle,) = _producer(app).running.values()
        assert await app.cancel_all_jobs(ids=[slow.id]) == 1
        assert handle.cancelled()
        # The queue's only slot is free again while the thread still runs.
        other = await app.insert(quick.new({}))

        async def other_done() -> bool:
            return (await app.get_job(other.id)).state == "completed"

        await wait_for(other_done, 10)
        release.set()
        await wait_for(lambda: saw == [True], 5)
        await asyncio.sleep(0.2)
        assert _producer(app).running == {}
    assert (await app.get_job(slow.id)).state == "cancelled"
    assert [md["job"].id for _, md in events.of(STOP)] == [other.id], "the dropped attempt emits no stop event"
    assert events.of(EXCEPTION) == []


async def test_a_graceful_stop_waits_for_sync_attempts_and_hands_the_unfinished_back(
    make_app: Callable[..., baton.Baton],
):
    app = make_app(queues={"default": 5}, shutdown_grace=1.0)
    release = threading.Event()

    @app.worker(name="sa.sleep")
    def sleep(job: baton.Job) -> None:
        if job.args["seconds"] > 1:
            release.wait(job.args["seconds"])
        else:
            time.sleep(job.args["seconds"])

    try:
        async with app:
            short = await app.insert(sleep.new({"seconds": 0.3}))
            long = await app.insert(sleep.new({"seconds": 30}))

            async def both_executing() -> bool:
                return all(j.state == "executing" for j in await app.list_jobs(ids=[short.id, long.id]))

            await wait_for(both_executing, 10)
            producer = _producer(app)
            assert all(isinstance(h, ThreadAttempt) for h in producer.running.values())
        assert producer.running == {}
    finally:
        release.set()
    assert (await app.get_job(short.id)).state == "completed"
    handed_back = await app.get_job(long.id)
    assert handed_back.state == "available"
    assert "shut down" in handed_back.errors[-1]["error"]


async def test_sync_workers_with_a_timeout_or_replaying_a_result_keep_their_task(
    make_app: Callable[..., baton.Baton],
):
    """A timeout is enforced by the attempt's Task; the rest of the batch still runs without one."""
    app = make_app(queues={"default": 5})
    gate = threading.Event()

    @app.worker(name="sa.timed", timeout=5)
    def timed(job: baton.Job) -> None:
        gate.wait(5)

    @app.worker(name="sa.plain")
    def plain(job: baton.Job) -> None:
        gate.wait(5)

    async with app:
        jobs = await app.insert_all([timed.new({}), plain.new({})])
        producer = _producer(app)
        await wait_for(lambda: len(producer.running) == 2, 10)
        kinds = {job_id: type(h) for job_id, h in producer.running.items()}
        gate.set()

        async def done() -> bool:
            return all(j.state == "completed" for j in await app.list_jobs(ids=[j.id for j in jobs]))

        await wait_for(done, 10)
    assert kinds[jobs[0].id] is asyncio.Task
    assert kinds[jobs[1].id] is ThreadAttempt


# --------------------------------------------------------------------------- short of memory


async def test_a_node_short_of_memory_runs_every_job_all_the_same(
    make_app: Callable[..., baton.Baton], monkeypatch: Any
):
    """What a job leaking memory does to the rest of its node: its MemoryError is the job's
    error, recorded with the hoard already released; pool threads cannot be started (no
    memory for their stacks); starting a fetched batch fails once. The node keeps fetching,
    hands back the batch it could not start, and runs everything else."""
    app = make_app(queues={"default": 6}, refresh_interval=0.2, stale_after=5)
    hoards: list[Any] = []

    class Hoard(list):  # type: ignore[type-arg]
        """What the leaking worker holds when its allocation fails (weakly referenced)."""

    @app.worker(name="sa.leak", max_attempts=2, backoff=lambda job: 0.0)
    def leak(job: baton.Job) -> None:
        hoard = Hoard([bytearray(2**20)])
        hoards.append(weakref.ref(hoard))
        raise MemoryError

    @app.worker(name="sa.small")
    def small(job: baton.Job) -> int:
        time.sleep(0.01)
        return job.args["i"]

    refused = refuse_thread_starts(monkeypatch, "baton-worker", 4, allow=1)
    async with app:
        executor = app._node.executor  # type: ignore[union-attr]
        real = executor.start_in_threads
        failed_batches: list[list[int]] = []

        def fails_once(jobs: list[baton.Job], owner: Any) -> Any:
            if not failed_batches:
                failed_batches.append([j.id for j in jobs])
                raise MemoryError
            return real(jobs, owner)

        monkeypatch.setattr(executor, "start_in_threads", fails_once)
        jobs = await app.insert_all([small.new({"i": i}) for i in range(40)])
        ids = [j.id for j in jobs]
        await wait_for(lambda: failed_batches, 10)
        leaking = await app.insert(leak.new({}))

        async def all_done() -> bool:
            states = {j.state for j in await app.list_jobs(ids=[*ids, leaking.id], limit=100)}
            return states <= {"completed", "discarded"}

        await wait_for(all_done, 20)

    assert failed_batches and refused, "both faults happened"
    assert {j.state for j in await app.list_jobs(ids=ids, limit=100)} == {"completed"}
    handed_back = await app.list_jobs(ids=failed_batches[0], limit=100)
    assert all(j.attempt >= 2 for j in handed_back), "the batch that could not start was handed back and run"
    job = await app.get_job(leaking.id)
    assert job.state == "discarded" and job.attempt == 2
    assert all(e["error"].startswith("MemoryError") for e in job.errors)
    assert all("raise MemoryError" in e["traceback"] for e in job.errors), "traceback kept, frames cleared"
    assert [ref() for ref in hoards] == [None, None]


def test_a_memory_errors_frames_are_cleared_before_its_traceback_is_formatted() -> None:
    """The worker's locals (its hoard) are let go while the MemoryError is still being handled:
    formatting the traceback and building the ack need memory the hoard would keep taken."""
    from baton.runtime.executor import _trace

    class Hoard(list):  # type: ignore[type-arg]
        pass

    refs: list[Any] = []

    def leak() -> None:
        hoard = Hoard([bytearray(2**20)])
        refs.append(weakref.ref(hoard))
        raise MemoryError

    try:
        leak()
    except MemoryError as exc:
        assert refs[0]() is not None, "the traceback keeps the worker's frame, and its hoard, alive"
        text = _trace(exc)
        assert refs[0]() is None
        assert "in leak" in text and "raise MemoryError" in text


async def test_a_job_whose_thread_could_not_start_runs_at_a_later_heartbeat(
    make_app: Callable[..., baton.Baton], monkeypatch: Any
):
    """The first worker thread of a node cannot be started (no memory for its stack) and no
    other job comes along to try again: the node's heartbeat starts it once it can."""
    app = make_app(queues={"default": 4}, refresh_interval=0.2, stale_after=5)

    @app.worker(name="sa.lonely")
    def lonely(job: baton.Job) -> str:
        return "ran"

    refused = refuse_thread_starts(monkeypatch, "baton-worker", 3)
    async with app:
        job = await app.insert(lonely.new({}))

        async def done() -> bool:
            return (await app.get_job(job.id)).state == "completed"

        await wait_for(done, 10)
    assert len(refused) == 3
