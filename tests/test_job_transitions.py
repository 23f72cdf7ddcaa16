"""Job state transitions (SPEC sections 1 and 2), each one driven both inline (`app.drain()`)
and by a started node: ok, error, exhaustion, backoff, snooze, cancel, discard, timeouts,
cancel of executing jobs, retry, staging, class-form workers, and jobs a node cannot run."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

import baton
from conftest import wait_for

MODES = ["drain", "node"]
# Returned and raised outcomes inline; the node path once (it shares the executor with drain).
OUTCOME_CASES = [
    pytest.param("drain", False, id="drain-returned"),
    pytest.param("drain", True, id="drain-raised"),
    pytest.param("node", True, id="node-raised"),
]
UNSETTLED = ("available", "executing")


def _sql(url: str, query: str, params: Sequence[Any] = ()) -> None:
    """Write straight to the database, behind Baton's back."""
    if url.startswith("postgres"):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(query, params)
        return
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=5)
    try:
        conn.execute(query.replace("%s", "?"), params)
        conn.commit()
    finally:
        conn.close()


async def _states(app: baton.Baton, ids: Sequence[int]) -> list[str]:
    jobs = [await app.get_job(i) for i in ids]
    return [j.state if j is not None else "missing" for j in jobs]


async def _settled(app: baton.Baton, ids: Sequence[int]) -> bool:
    return not any(s in UNSETTLED for s in await _states(app, ids))


async def run(
    app: baton.Baton,
    mode: str,
    ids: Sequence[int],
    until: Callable[[list[str]], bool] | None = None,
    timeout: float = 10.0,
) -> dict[str, int]:
    """Run the jobs inline (drain) or on a started node until none is available/executing
    (or `until(states)` holds); returns the drain counts (empty for a node)."""
    if mode == "drain":
        return await app.drain()
    done = until or (lambda states: not any(s in UNSETTLED for s in states))

    async with app:

        async def settled() -> bool:
            return done(await _states(app, ids))

        await wait_for(settled, timeout)
    return {}


@pytest.fixture
def fast_app(make_app: Callable[..., baton.Baton]) -> baton.Baton:
    """An app whose Stager runs often, for transitions that go through `retryable`."""
    return make_app(queues={"default": 10}, plugins=[baton.plugins.Stager(interval=0.05)], poll_interval=0.1)


def _secs_from_now(at: datetime | None) -> float:
    assert at is not None
    return (at - datetime.now(UTC)).total_seconds()


# --------------------------------------------------------------------------- completed


@pytest.mark.parametrize("mode", MODES)
async def test_ok_completes(app, mode):
    seen: list[dict[str, Any]] = []

    @app.worker(name="tr.ok")
    def ok(job: baton.Job) -> int:
        seen.append(job.args)
        return job.args["a"] + 1

    @app.worker(name="tr.ok_async")
    async def ok_async(job: baton.Job) -> None:
        await asyncio.sleep(0)
        seen.append(job.args)

    jobs = await app.insert_all([ok.new({"a": 1}), ok_async.new({"a": 2})])
    counts = await run(app, mode, [j.id for j in jobs])
    if mode == "drain":
        assert counts == {"completed": 2}
    assert sorted(a["a"] for a in seen) == [1, 2]
    for j in jobs:
        stored = await app.get_job(j.id)
        assert stored.state == "completed"
        assert stored.attempt == 1
        assert stored.completed_at is not None
        assert stored.attempted_at is not None
        assert stored.errors == []
        assert stored.attempted_by is not None and stored.attempted_by[0] == app.node


async def test_drain_runs_higher_priority_first(app):
    order: list[int] = []

    @app.worker(name="tr.prio")
    def prio(job: baton.Job) -> None:
        order.append(job.priority)

    await app.insert_all([prio.new({}, priority=p) for p in (9, 5, 0, 3)])
    assert await app.drain() == {"completed": 4}
    assert order == [0, 3, 5, 9]


async def test_drain_of_one_queue_leaves_the_others(app):
    @app.worker(name="tr.queues")
    def w(job: baton.Job) -> None:
        return None

    a = await app.insert(w.new({}, queue="a"))
    b = await app.insert(w.new({}, queue="b"))
    assert await app.drain(queue="a") == {"completed": 1}
    assert await _states(app, [a.id, b.id]) == ["completed", "available"]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("mode", MODES)
async def test_error_with_attempts_left_is_retryable_after_the_default_backoff(app, mode):
    @app.worker(name="tr.fail", max_attempts=3)
    def fail(job: baton.Job) -> None:
        raise RuntimeError(f"boom {job.args['n']}")

    job = await app.insert(fail.new({"n": 7}))
    counts = await run(app, mode, [job.id])
    if mode == "drain":
        assert counts == {"retryable": 1}
    stored = await app.get_job(job.id)
    assert stored.state == "retryable"
    assert stored.attempt == 1
    assert stored.max_attempts == 3
    # Default backoff: 15 + 2**attempt = 17 seconds, +-10%.
    assert 15.3 - 1 <= _secs_from_now(stored.scheduled_at) <= 18.7 + 0.5
    assert len(stored.errors) == 1
    entry = stored.errors[0]
    assert {"at", "attempt", "error", "traceback"} <= set(entry)
    assert entry["attempt"] == 1
    assert "RuntimeError" in entry["error"] and "boom 7" in entry["error"]
    assert "Traceback" in entry["traceback"] and "boom 7" in entry["traceback"]
    assert stored.completed_at is None and stored.discarded_at is None


@pytest.mark.parametrize("mode", MODES)
async def test_custom_backoff_then_the_job_is_retried(fast_app, mode):
    app = fast_app
    attempts: list[int] = []

    @app.worker(name="tr.backoff", max_attempts=5, backoff=lambda job: attempts.append(job.attempt) or 0)
    def flaky(job: baton.Job) -> str:
        if job.attempt < 3:
            raise ValueError(f"attempt {job.attempt} fails")
        return "ok"

    job = await app.insert(flaky.new({}))
    counts = await run(app, mode, [job.id], until=lambda s: s == ["completed"])
    if mode == "drain":
        assert counts == {"retryable": 2, "completed": 1}
    stored = await app.get_job(job.id)
    assert stored.state == "completed"
    assert stored.attempt == 3
    assert attempts == [1, 2]
    assert [e["attempt"] for e in stored.errors] == [1, 2]
    assert "attempt 2 fails" in stored.errors[1]["error"]


async def test_retryable_then_drain_again_after_the_backoff(app):
    @app.worker(name="tr.backoff_wait", backoff=lambda job: 0.5)
    def flaky(job: baton.Job) -> None:
        if job.attempt == 1:
            raise ValueError("first try fails")

    job = await app.insert(flaky.new({}))
    assert await app.drain() == {"retryable": 1}
    stored = await app.get_job(job.id)
    assert stored.state == "retryable"
    # Both times come from the database clock: due 0.5 s after the attempt started (+ its run time).
    assert 0.45 <= (stored.scheduled_at - stored.attempted_at).total_seconds() <= 2
    await asyncio.sleep(0.6)
    assert await app.drain() == {"completed": 1}
    assert (await app.get_job(job.id)).attempt == 2


@pytest.mark.parametrize("mode", MODES)
async def test_exhausted_attempts_are_discarded(app, mode):
    @app.worker(name="tr.exhaust", max_attempts=1)
    async def fail(job: baton.Job) -> None:
        raise KeyError("missing")

    job = await app.insert(fail.new({}))
    counts = await run(app, mode, [job.id])
    if mode == "drain":
        assert counts == {"discarded": 1}
    stored = await app.get_job(job.id)
    assert stored.state == "discarded"
    assert stored.discarded_at is not None
    assert stored.attempt == 1
    assert len(stored.errors) == 1 and "KeyError" in stored.errors[0]["error"]


@pytest.mark.parametrize("mode", MODES)
async def test_every_attempt_until_exhaustion_is_recorded(fast_app, mode):
    app = fast_app

    @app.worker(name="tr.always", max_attempts=3, backoff=lambda job: 0)
    def always(job: baton.Job) -> None:
        raise RuntimeError(f"fail {job.attempt}")

    job = await app.insert(always.new({}))
    counts = await run(app, mode, [job.id], until=lambda s: s == ["discarded"])
    if mode == "drain":
        assert counts == {"retryable": 2, "discarded": 1}
    stored = await app.get_job(job.id)
    assert stored.state == "discarded"
    assert stored.attempt == 3
    assert [e["attempt"] for e in stored.errors] == [1, 2, 3]
    assert [e["error"] for e in stored.errors] == [f"RuntimeError: fail {i}" for i in (1, 2, 3)]


async def test_a_failing_backoff_falls_back_to_the_default(app):
    def bad_backoff(job: baton.Job) -> float:
        raise ZeroDivisionError("bad backoff")

    @app.worker(name="tr.bad_backoff", backoff=bad_backoff)
    def fail(job: baton.Job) -> None:
        raise RuntimeError("boom")

    job = await app.insert(fail.new({}))
    assert await app.drain() == {"retryable": 1}
    stored = await app.get_job(job.id)
    assert 14 <= _secs_from_now(stored.scheduled_at) <= 19.5
    error = stored.errors[0]["error"]
    assert error.startswith("RuntimeError: boom (its backoff raised ZeroDivisionError: bad backoff; "), error
    assert "default backoff" in error


# A backoff's value the database could not schedule (NaN, infinity, a date past year 9999)
# once left its ack unwritable: the job, and every later ack of the node, stayed executing.
BAD_BACKOFFS = [
    pytest.param(float("nan"), "nan", id="nan"),
    pytest.param(float("inf"), "inf", id="inf"),
    pytest.param(1e12, "1000000000000.0", id="1e12"),
    pytest.param(1e300, "1e+300", id="1e300"),
    pytest.param(-1, "-1", id="negative"),
    pytest.param(10**400, "1000000", id="huge-int"),
    pytest.param("soon", "'soon'", id="text"),
]


@pytest.mark.parametrize(("value", "shown"), BAD_BACKOFFS)
@pytest.mark.parametrize("mode", MODES)
async def test_a_backoff_out_of_range_falls_back_to_the_default_and_holds_back_no_ack(app, mode, value, shown):
    @app.worker(name="tr.odd_backoff", backoff=lambda job: value)
    def fail(job: baton.Job) -> None:
        raise RuntimeError("boom")

    @app.worker(name="tr.beside_odd_backoff")
    def plain(job: baton.Job) -> str:
        return "ok"

    failing, beside = await app.insert_all([fail.new({}), plain.new({})])
    if mode == "drain":
        assert await app.drain() == {"retryable": 1, "completed": 1}
    else:
        async with app:
            # Fetched in one batch; then a job inserted afterwards: its ack goes out too, so
            # nothing is stuck in the node's acker behind the failing job's.
            await wait_for(lambda: _settled(app, [failing.id, beside.id]), 10)
            later = await app.insert(plain.new({}))
            await wait_for(lambda: _settled(app, [later.id]), 10)
        assert (await app.get_job(later.id)).state == "completed"
    stored = await app.get_job(failing.id)
    assert stored.state == "retryable" and stored.attempt == 1
    assert 14 <= _secs_from_now(stored.scheduled_at) <= 19.5, "the default backoff"
    error = stored.errors[0]["error"]
    assert error.startswith(f"RuntimeError: boom (its backoff returned {shown}"), error
    assert "not a number of seconds from 0 to 3155760000" in error and "default backoff" in error
    assert "Traceback" in stored.errors[0]["traceback"]
    assert (await app.get_job(beside.id)).state == "completed"


async def test_an_ack_the_database_cannot_schedule_is_replaced_and_holds_back_no_other(app):
    """The acker's last guard: an ack carrying a delay no engine can store (one the executor's
    check would not let through) is written with the default backoff; later acks go out."""
    from baton.store import transitions
    from baton.store.jobs import Ack

    @app.worker(name="tr.raw_ack")
    def plain(job: baton.Job) -> str:
        return "ok"

    async with app:
        node = app._node
        assert node is not None
        held = await app.insert(plain.new({}, queue="nobody"))  # never fetched by the node
        claimed = await app.engine.run(transitions.fetch_jobs, "nobody", app.node, "x", 1)
        assert [j.id for j in claimed] == [held.id]
        node.acker.push(Ack(claimed[0], "retryable", delay=float("nan"), error="RuntimeError: boom"))
        later = await app.insert(plain.new({}))

        async def settled() -> bool:
            return await _states(app, [held.id, later.id]) == ["retryable", "completed"]

        await wait_for(settled, 10)
    stored = await app.get_job(held.id)
    assert 14 <= _secs_from_now(stored.scheduled_at) <= 19.5
    assert "RuntimeError: boom (the full outcome could not be stored" in stored.errors[0]["error"]


async def test_every_errors_entry_has_at_attempt_error_and_traceback(app, engine_name, request):

    @app.worker(name="tr.shape_timeout", timeout=0.05)
    async def slow(job: baton.Job) -> None:
        await asyncio.sleep(1)

    @app.worker(name="tr.shape_cancel")
    def cancel(job: baton.Job) -> baton.Cancel:
        return baton.Cancel("no longer needed")

    jobs = await app.insert_all([slow.new({}), cancel.new({})])
    await app.drain()
    for j in jobs:
        stored = await app.get_job(j.id)
        assert len(stored.errors) == 1
        assert {"at", "attempt", "error", "traceback"} <= set(stored.errors[0]), stored.errors[0]


# --------------------------------------------------------------------------- snooze


@pytest.mark.parametrize(("mode", "raised"), OUTCOME_CASES)
async def test_snooze_schedules_the_job_without_counting_the_attempt(app, mode, raised):
    @app.worker(name="tr.snooze")
    def snoozy(job: baton.Job) -> baton.Snooze:
        if raised:
            raise baton.Snooze(60)
        return baton.Snooze(60)

    job = await app.insert(snoozy.new({}))
    counts = await run(app, mode, [job.id])
    if mode == "drain":
        assert counts == {"scheduled": 1}
    stored = await app.get_job(job.id)
    assert stored.state == "scheduled"
    assert stored.attempt == 1
    assert stored.max_attempts == 21, "a snooze gives the attempt back"
    assert stored.meta.get("snoozed") == 1
    assert stored.errors == []
    assert 50 <= _secs_from_now(stored.scheduled_at) <= 61


@pytest.mark.parametrize("mode", MODES)
async def test_a_snoozed_job_with_one_attempt_still_gets_its_real_try(fast_app, mode):
    app = fast_app

    @app.worker(name="tr.snooze_once", max_attempts=1)
    async def once(job: baton.Job) -> Any:
        if not job.meta.get("snoozed"):
            return baton.Snooze(0)
        return "done"

    job = await app.insert(once.new({}))
    counts = await run(app, mode, [job.id], until=lambda s: s == ["completed"])
    if mode == "drain":
        assert counts == {"scheduled": 1, "completed": 1}
    stored = await app.get_job(job.id)
    assert stored.state == "completed"
    assert stored.attempt == 2
    assert stored.max_attempts == 2
    assert stored.meta["snoozed"] == 1


# `snoozed` is a meta key Baton counts in, but the user's too: a value of theirs that is not a
# count once raised in the executor (ValueError), leaving the job executing on a live node.
ODD_SNOOZED = [
    pytest.param("often", id="text"),
    pytest.param(1.5, id="float"),
    pytest.param(True, id="bool"),
    pytest.param(-3, id="negative"),
    pytest.param(10**12, id="huge"),
    pytest.param({"n": 2}, id="object"),
]


@pytest.mark.parametrize("value", ODD_SNOOZED)
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("mode", MODES)
async def test_a_user_meta_snoozed_that_is_not_a_count_counts_as_zero(app, mode, kind, value):
    if kind == "sync":

        @app.worker(name="tr.snooze_meta")
        def snoozy(job: baton.Job) -> baton.Snooze:
            return baton.Snooze(60)
    else:

        @app.worker(name="tr.snooze_meta_async")
        async def snoozy(job: baton.Job) -> baton.Snooze:
            raise baton.Snooze(60)

    @app.worker(name="tr.beside_snooze_meta")
    def plain(job: baton.Job) -> str:
        return "ok"

    job, beside = await app.insert_all([snoozy.new({}, meta={"snoozed": value, "mine": 1}), plain.new({})])
    counts = await run(app, mode, [job.id, beside.id])
    if mode == "drain":
        assert counts == {"scheduled": 1, "completed": 1}
    stored = await app.get_job(job.id)
    assert stored.state == "scheduled" and stored.errors == []
    assert stored.meta == {"snoozed": 1, "mine": 1}
    assert stored.max_attempts == 21
    assert (await app.get_job(beside.id)).state == "completed"


async def test_a_snooze_counts_on_from_baton_own_count(app):
    @app.worker(name="tr.snooze_count")
    def snoozy(job: baton.Job) -> baton.Snooze:
        return baton.Snooze(60)

    job = await app.insert(snoozy.new({}, meta={"snoozed": 41}))
    assert await app.drain() == {"scheduled": 1}
    assert (await app.get_job(job.id)).meta["snoozed"] == 42


# --------------------------------------------------------------------------- cancel / discard


@pytest.mark.parametrize(("mode", "raised"), OUTCOME_CASES)
async def test_worker_cancel_ends_cancelled(app, mode, raised):
    @app.worker(name="tr.cancel")
    async def cancel(job: baton.Job) -> baton.Cancel:
        if raised:
            raise baton.Cancel("user deleted")
        return baton.Cancel("user deleted")

    job = await app.insert(cancel.new({}))
    counts = await run(app, mode, [job.id])
    if mode == "drain":
        assert counts == {"cancelled": 1}
    stored = await app.get_job(job.id)
    assert stored.state == "cancelled"
    assert stored.cancelled_at is not None
    assert stored.attempt == 1
    assert len(stored.errors) == 1 and "user deleted" in stored.errors[0]["error"]


@pytest.mark.parametrize(("mode", "raised"), OUTCOME_CASES)
async def test_worker_discard_ends_discarded_even_with_attempts_left(app, mode, raised):
    @app.worker(name="tr.discard", max_attempts=5)
    def discard(job: baton.Job) -> baton.Discard:
        if raised:
            raise baton.Discard("bad payload")
        return baton.Discard("bad payload")

    job = await app.insert(discard.new({}))
    counts = await run(app, mode, [job.id])
    if mode == "drain":
        assert counts == {"discarded": 1}
    stored = await app.get_job(job.id)
    assert stored.state == "discarded"
    assert stored.discarded_at is not None
    assert stored.attempt == 1
    assert len(stored.errors) == 1 and "bad payload" in stored.errors[0]["error"]


# --------------------------------------------------------------------------- timeouts


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("mode", MODES)
async def test_worker_timeout_is_an_error_attempt(app, mode, kind):
    release = threading.Event()
    if kind == "sync":

        @app.worker(name="tr.timeout_sync", timeout=0.2)
        def slow(job: baton.Job) -> None:
            release.wait(5)
    else:

        @app.worker(name="tr.timeout_async", timeout=0.2)
        async def slow(job: baton.Job) -> None:
            await asyncio.sleep(5)

    started = time.monotonic()
    job = await app.insert(slow.new({}))
    try:
        counts = await run(app, mode, [job.id])
    finally:
        release.set()
    assert time.monotonic() - started < 4, "the timeout must not wait for the worker"
    if mode == "drain":
        assert counts == {"retryable": 1}
    stored = await app.get_job(job.id)
    assert stored.state == "retryable"
    assert stored.attempt == 1
    assert len(stored.errors) == 1
    assert "exceeded the worker timeout" in stored.errors[0]["error"]


async def test_timed_out_sync_jobs_do_not_use_up_the_nodes_threads(make_app):
    app = make_app(queues={"default": 2}, poll_interval=0.1)
    release = threading.Event()

    @app.worker(name="tr.stuck", timeout=0.1, max_attempts=1)
    def stuck(job: baton.Job) -> None:
        release.wait(10)

    @app.worker(name="tr.quick", timeout=0.5, max_attempts=1)
    def quick(job: baton.Job) -> str:
        return "ran"

    try:
        async with app:
            stuck_jobs = await app.insert_all([stuck.new({"i": i}) for i in range(4)])

            async def all_timed_out() -> bool:
                return all(s == "discarded" for s in await _states(app, [j.id for j in stuck_jobs]))

            await wait_for(all_timed_out, 10)
            job = await app.insert(quick.new({}))

            async def finished() -> bool:
                return (await _states(app, [job.id]))[0] in ("completed", "discarded")

            await wait_for(finished, 10)
            stored = await app.get_job(job.id)
            assert stored.state == "completed", stored.errors
    finally:
        release.set()


async def test_worker_timeout_on_the_last_attempt_discards(app):
    @app.worker(name="tr.timeout_last", timeout=0.05, max_attempts=1)
    async def slow(job: baton.Job) -> None:
        await asyncio.sleep(1)

    job = await app.insert(slow.new({}))
    assert await app.drain() == {"discarded": 1}
    assert "exceeded the worker timeout" in (await app.get_job(job.id)).errors[0]["error"]


# --------------------------------------------------------------------------- cancel by the user


async def test_cancel_of_available_and_scheduled_jobs(app):
    @app.worker(name="tr.to_cancel")
    def w(job: baton.Job) -> None:
        raise AssertionError("a cancelled job must not run")

    available = await app.insert(w.new({"k": 1}))
    scheduled = await app.insert(w.new({"k": 2}, schedule_in=3600))
    keep = await app.insert(w.new({"k": 3}, schedule_in=3600))
    assert await app.cancel_all_jobs(ids=[available.id, scheduled.id]) == 2
    for j in (available, scheduled):
        stored = await app.get_job(j.id)
        assert stored.state == "cancelled"
        assert stored.cancelled_at is not None
        assert stored.attempt == 0
    assert (await app.get_job(keep.id)).state == "scheduled"
    assert await app.drain() == {}
    # Cancelling again (terminal) changes nothing.
    assert await app.cancel_all_jobs(ids=[available.id]) == 0


async def test_cancel_by_filters(app):
    @app.worker(name="tr.filter_a")
    def a(job: baton.Job) -> None:
        return None

    @app.worker(name="tr.filter_b")
    def b(job: baton.Job) -> None:
        return None

    a1 = await app.insert(a.new({}, queue="q1"))
    a2 = await app.insert(a.new({}, queue="q2"))
    b1 = await app.insert(b.new({}, queue="q1"))
    b2 = await app.insert(b.new({}, queue="q1", schedule_in=3600))
    assert await app.cancel_all_jobs(queue="q2") == 1
    assert await app.cancel_all_jobs(worker="tr.filter_b", states=["scheduled"]) == 1
    assert await _states(app, [a1.id, a2.id, b1.id, b2.id]) == ["available", "cancelled", "available", "cancelled"]
    cancelled = await app.cancel_job(a1.id)
    assert cancelled is not None and cancelled.state == "cancelled"


async def test_cancel_job_of_an_already_cancelled_job_returns_none(app):
    @app.worker(name="tr.cancel_twice")
    def a(job: baton.Job) -> None:
        return None

    job = await app.insert(a.new({}))
    assert await app.cancel_job(job.id) is not None
    assert await app.cancel_job(job.id) is None


async def test_cancel_of_an_executing_job_cancels_its_task(app):
    started = asyncio.Event()
    cancelled = asyncio.Event()
    finished_anyway: list[int] = []

    @app.worker(name="tr.long")
    async def long(job: baton.Job) -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        finished_anyway.append(job.id)
        return "late"

    async with app:
        job = await app.insert(long.new({}))
        await asyncio.wait_for(started.wait(), 5)
        assert (await app.get_job(job.id)).state == "executing"
        assert await app.cancel_all_jobs(ids=[job.id]) == 1
        await asyncio.wait_for(cancelled.wait(), 5)
        stored = await app.get_job(job.id)
        assert stored.state == "cancelled"
        assert stored.cancelled_at is not None
        await wait_for(lambda: app.queue_state()["default"]["running"] == 0, 5)
    assert finished_anyway == []
    assert (await app.get_job(job.id)).state == "cancelled"


async def test_a_completion_after_cancel_is_dropped(app, events):
    events.attach(("baton", "job", "fenced"))
    started = asyncio.Event()

    @app.worker(name="tr.stubborn")
    async def stubborn(job: baton.Job) -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "finished anyway"  # swallows the cancel: its ack must be fenced
        return "never"

    async with app:
        job = await app.insert(stubborn.new({}))
        await asyncio.wait_for(started.wait(), 5)
        assert await app.cancel_all_jobs(ids=[job.id]) == 1
        await wait_for(lambda: events.of(("baton", "job", "fenced")), 5)
    stored = await app.get_job(job.id)
    assert stored.state == "cancelled"
    assert stored.completed_at is None
    ((_measurements, metadata),) = events.of(("baton", "job", "fenced"))
    assert metadata["job_id"] == job.id
    assert metadata["reason"] == "cancelled"


async def test_a_sync_job_finishing_after_cancel_stays_cancelled(app):
    started = threading.Event()
    release = threading.Event()
    done = threading.Event()

    @app.worker(name="tr.sync_long")
    def long(job: baton.Job) -> str:
        started.set()
        release.wait(10)
        done.set()
        return "late"

    async with app:
        job = await app.insert(long.new({}))
        assert await asyncio.to_thread(started.wait, 5)
        assert await app.cancel_all_jobs(ids=[job.id]) == 1
        await wait_for(lambda: app.queue_state()["default"]["running"] == 0, 5)
        release.set()
        assert await asyncio.to_thread(done.wait, 5)
        await asyncio.sleep(0.2)
        stored = await app.get_job(job.id)
        assert stored.state == "cancelled"
        assert stored.completed_at is None


async def test_cancel_from_another_app_reaches_the_running_node(make_app):
    node_app = make_app(queues={"default": 5})
    other = make_app()
    cancelled = asyncio.Event()
    started = asyncio.Event()

    @node_app.worker(name="tr.remote_cancel")
    async def long(job: baton.Job) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    other.register(long)
    async with node_app:
        job = await other.insert(long.new({}))
        await asyncio.wait_for(started.wait(), 5)
        assert await other.cancel_all_jobs(ids=[job.id]) == 1
        await asyncio.wait_for(cancelled.wait(), 5)
        assert (await other.get_job(job.id)).state == "cancelled"


# --------------------------------------------------------------------------- retry


async def test_retry_moves_finished_and_retryable_jobs_back_to_available(app):
    @app.worker(name="tr.retry", max_attempts=1)
    def w(job: baton.Job) -> Any:
        kind = job.args["kind"]
        if kind == "discarded":
            raise RuntimeError("boom")
        if kind == "cancelled":
            return baton.Cancel("stop")
        return "ok"

    @app.worker(name="tr.retry_retryable", max_attempts=5)
    def r(job: baton.Job) -> None:
        raise RuntimeError("again")

    jobs = await app.insert_all([w.new({"kind": k}) for k in ("completed", "discarded", "cancelled")])
    retryable = await app.insert(r.new({}))
    await app.drain()
    assert await _states(app, [*(j.id for j in jobs), retryable.id]) == [
        "completed",
        "discarded",
        "cancelled",
        "retryable",
    ]
    for j in [*jobs, retryable]:
        retried = await app.retry_job(j.id)
        assert retried is not None and retried.state == "available"
        stored = await app.get_job(j.id)
        assert stored.state == "available"
        assert stored.completed_at is None and stored.discarded_at is None and stored.cancelled_at is None
        assert stored.max_attempts > stored.attempt, "a retried job has an attempt left"
        assert _secs_from_now(stored.scheduled_at) <= 0.5
    # The retried exhausted job really runs again.
    counts = await app.drain()
    assert counts.get("discarded", 0) + counts.get("retryable", 0) >= 2
    assert (await app.get_job(jobs[1].id)).attempt == 2


async def test_retry_of_an_executing_or_available_job_is_refused(app):
    started = asyncio.Event()
    release = asyncio.Event()

    @app.worker(name="tr.retry_exec")
    async def w(job: baton.Job) -> None:
        started.set()
        await release.wait()

    waiting = await app.insert(w.new({"x": 1}, queue="idle"))
    assert await app.retry_job(waiting.id) is None
    assert await app.retry_job(10_000_000) is None
    async with app:
        job = await app.insert(w.new({}))
        await asyncio.wait_for(started.wait(), 5)
        assert await app.retry_job(job.id) is None
        assert (await app.get_job(job.id)).state == "executing"
        release.set()

        async def done() -> bool:
            return (await app.get_job(job.id)).state == "completed"

        await wait_for(done, 5)
    assert (await app.get_job(job.id)).attempt == 1


async def test_retry_all_jobs_counts(app):
    @app.worker(name="tr.retry_all")
    def w(job: baton.Job) -> None:
        return None

    jobs = await app.insert_all([w.new({"i": i}) for i in range(3)])
    await app.drain()
    assert await app.retry_all_jobs([j.id for j in jobs]) == 3
    assert await app.drain() == {"completed": 3}


async def test_retry_of_a_unique_job_whose_key_a_live_job_holds_is_refused(app):
    """`unique` promises at most one job per key: a finished job is not brought back to life
    beside a waiting or running one of its key. The call names `unique` and the holder; once
    the holder has finished, the retry goes through."""

    @app.worker(name="tr.retry_unique", unique={"period": None, "keys": ["account"]}, max_attempts=1)
    def refresh(job: baton.Job) -> Any:
        return baton.Discard("upstream down") if job.args.get("fail") else None

    first = await app.insert(refresh.new({"account": 7, "fail": True}))
    assert await app.drain() == {"discarded": 1}
    second = await app.insert(refresh.new({"account": 7}))  # discarded is not a unique state: a new row
    assert not second.conflict
    with pytest.raises(baton.ValidationError) as info:
        await app.retry_job(first.id)
    assert info.value.field == "unique"
    assert f"job {first.id} was not retried: job {second.id} (available) has the same unique key" in str(info.value)
    assert await app.retry_all_jobs([first.id]) == 0
    assert await _states(app, [first.id, second.id]) == ["discarded", "available"]
    assert await app.drain() == {"completed": 1}  # only the holder ran
    retried = await app.retry_job(first.id)  # a completed holder is not live
    assert retried is not None and retried.state == "available"
    assert (await app.insert(refresh.new({"account": 7}))).id == first.id  # the retried one holds the key now


async def test_retry_all_jobs_brings_back_one_finished_job_per_unique_key(app):
    @app.worker(name="tr.retry_all_unique", unique={"period": None, "keys": ["k"], "states": ["available"]})
    def w(job: baton.Job) -> Any:
        return baton.Cancel("not now") if job.args.get("cancel") else None

    @app.worker(name="tr.retry_all_plain")
    def plain(job: baton.Job) -> None:
        return None

    # The unique states leave cancelled and completed out: three finished rows of key 1.
    a = await app.insert(w.new({"k": 1, "cancel": True}))
    assert await app.drain() == {"cancelled": 1}
    b = await app.insert(w.new({"k": 1, "cancel": True}))
    c = await app.insert(w.new({"k": 2, "cancel": True}))
    assert await app.drain() == {"cancelled": 2}
    d = await app.insert(w.new({"k": 1}))
    e = await app.insert(plain.new({}))
    assert await app.drain() == {"completed": 2}
    ids = [a.id, b.id, c.id, d.id, e.id]
    assert await app.retry_all_jobs(ids) == 3  # the first of key 1 (a), c and e
    assert await _states(app, ids) == ["available", "cancelled", "available", "completed", "available"]


async def test_concurrent_retries_and_inserts_of_one_unique_key_leave_one_live_job(make_app):
    """Retries of two finished twins and an insert of their key, racing from two apps (two
    pools): the key's lock serialises them, so exactly one job of the key is live after each."""
    apps = [make_app(), make_app()]
    workers = [
        a.worker(name="tr.retry_race", unique={"period": None, "keys": ["k"]}, max_attempts=1)(
            lambda job: baton.Discard("no")
        )
        for a in apps
    ]

    async def retry(app: baton.Baton, job_id: int) -> None:
        with contextlib.suppress(baton.ValidationError):  # refused: another holds the key
            await app.retry_job(job_id)

    for k in range(6):
        old = await apps[0].insert(workers[0].new({"k": k, "n": 0}))
        assert await apps[0].drain() == {"discarded": 1}
        twin = await apps[0].insert(workers[0].new({"k": k, "n": 1}))
        assert await apps[0].drain() == {"discarded": 1}
        racers = [retry(apps[0], old.id), retry(apps[1], twin.id), apps[k % 2].insert(workers[k % 2].new({"k": k}))]
        await asyncio.gather(*(racers if k < 3 else reversed(racers)))
        jobs = await apps[0].list_jobs(worker="tr.retry_race", states=["available"])
        assert len(jobs) == 1, jobs
        assert await apps[0].cancel_all_jobs(ids=[jobs[0].id]) == 1


# --------------------------------------------------------------------------- staging


async def test_stager_makes_due_scheduled_and_retryable_jobs_available(app):
    @app.worker(name="tr.stage", backoff=lambda job: 0.5)
    def w(job: baton.Job) -> None:
        if job.args.get("fail"):
            raise RuntimeError("fail once")

    soon = await app.insert(w.new({}, schedule_in=0.5))
    later = await app.insert(w.new({}, schedule_in=3600))
    retry = await app.insert(w.new({"fail": True}))
    assert await app.drain() == {"retryable": 1}
    assert await _states(app, [soon.id, later.id, retry.id]) == ["scheduled", "scheduled", "retryable"]
    result = await baton.plugins.Stager().sweep(app)
    assert result["staged_count"] == 0
    await asyncio.sleep(0.6)
    result = await baton.plugins.Stager().sweep(app)
    assert result["staged_count"] == 2
    assert result["staged"] == {"default": 2}
    assert await _states(app, [soon.id, later.id, retry.id]) == ["available", "scheduled", "available"]


async def test_a_started_node_runs_a_scheduled_job_when_due(fast_app):
    app = fast_app
    ran_at: list[float] = []

    @app.worker(name="tr.due")
    def w(job: baton.Job) -> None:
        ran_at.append(time.monotonic())

    async with app:
        t0 = time.monotonic()
        job = await app.insert(w.new({}, schedule_in=0.5))

        async def done() -> bool:
            return (await app.get_job(job.id)).state == "completed"

        await wait_for(done, 5)
    assert ran_at and ran_at[0] - t0 >= 0.45


# --------------------------------------------------------------------------- class-form workers


class SyncClassWorker(baton.Worker):
    name = "tr.SyncClassWorker"
    queue = "classes"
    max_attempts = 2

    def perform(self, job: baton.Job) -> int:
        if job.args.get("fail"):
            raise RuntimeError("class failure")
        return job.args["n"] * 2

    def backoff(self, job: baton.Job) -> float:
        return 0


class AsyncClassWorker(baton.Worker):
    name = "tr.AsyncClassWorker"
    queue = "classes"
    priority = 2

    async def perform(self, job: baton.Job) -> Any:
        await asyncio.sleep(0)
        if job.args.get("snooze"):
            return baton.Snooze(60)
        return None


@pytest.mark.parametrize("mode", MODES)
async def test_class_form_workers_sync_and_async(make_app, mode):
    app = make_app(queues={"classes": 5}, plugins=[baton.plugins.Stager(interval=0.05)])
    jobs = await app.insert_all(
        [
            SyncClassWorker.new({"n": 2}),
            SyncClassWorker.new({"n": 3, "fail": True}),
            AsyncClassWorker.new({}),
            AsyncClassWorker.new({"snooze": True}),
        ]
    )
    assert [j.queue for j in jobs] == ["classes"] * 4
    assert (await app.get_job(jobs[2].id)).priority == 2
    counts = await run(
        app, mode, [j.id for j in jobs], until=lambda s: s == ["completed", "discarded", "completed", "scheduled"]
    )
    if mode == "drain":
        assert counts == {"completed": 2, "retryable": 1, "discarded": 1, "scheduled": 1}
    assert await _states(app, [j.id for j in jobs]) == ["completed", "discarded", "completed", "scheduled"]
    failed = await app.get_job(jobs[1].id)
    assert failed.attempt == 2 and len(failed.errors) == 2 and "class failure" in failed.errors[0]["error"]


# --------------------------------------------------------------------------- jobs a node cannot run


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_worker_calling_sys_exit_is_an_error_not_an_exit(app, kind):
    if kind == "sync":

        @app.worker(name="tr.exit_sync", max_attempts=2)
        def leave(job: baton.Job) -> None:
            sys.exit(3)
    else:

        @app.worker(name="tr.exit_async", max_attempts=2)
        async def leave(job: baton.Job) -> None:
            raise SystemExit(4)

    job = await app.insert(leave.new({}))
    try:
        counts = await app.drain()
    except SystemExit as exc:
        raise AssertionError(f"SystemExit({exc.code}) escaped app.drain()") from None
    assert counts == {"retryable": 1}
    assert "SystemExit" in (await app.get_job(job.id)).errors[0]["error"]


async def test_unknown_worker_on_the_node_errors_and_the_node_keeps_running(make_app):
    inserter = make_app()
    node_app = make_app(queues={"default": 5})

    @inserter.worker(name="ghost.worker")
    def ghost(job: baton.Job) -> None:
        return None

    @node_app.worker(name="tr.known")
    def known(job: baton.Job) -> None:
        return None

    inserter.register(known)
    async with node_app:
        lost = await inserter.insert(ghost.new({"x": 1}))

        async def errored() -> bool:
            return (await node_app.get_job(lost.id)).state == "retryable"

        await wait_for(errored, 10)
        stored = await node_app.get_job(lost.id)
        assert len(stored.errors) == 1
        assert "ghost.worker" in stored.errors[0]["error"]
        assert stored.attempt == 1
        assert _secs_from_now(stored.scheduled_at) > 5, "retried later, after a backoff"
        # The node is still alive and runs the jobs it knows.
        ok = await inserter.insert(known.new({}))

        async def completed() -> bool:
            return (await node_app.get_job(ok.id)).state == "completed"

        await wait_for(completed, 10)
        assert node_app.running


def _broken_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Modules on sys.path that fail at import on this node, by what they raise: a worker
    name (`module.task`) for each."""
    tag = uuid.uuid4().hex[:8]
    bodies = {
        "runtime": 'raise RuntimeError("DATABASE_PASSWORD is not set")',
        "syntax": "def task(job) pass",
        "dependency": "import tr_no_such_dependency_at_all",
        "exit": "import sys\nsys.exit(3)",
    }
    names = {}
    for kind, body in bodies.items():
        module = f"tr_broken_{kind}_{tag}"
        (tmp_path / f"{module}.py").write_text(f"{body}\n\ndef task(job):\n    return None\n")
        names[kind] = f"{module}.task"
    monkeypatch.syspath_prepend(str(tmp_path))
    return names


@pytest.mark.parametrize("mode", MODES)
async def test_a_worker_module_that_fails_at_import_errors_and_its_batch_runs(make_app, tmp_path, monkeypatch, mode):
    """SPEC 7: the job records the import failure and follows the retry path; the jobs fetched
    with it run (they once all stayed executing, handed back as lost fetches for ever)."""
    broken = _broken_modules(tmp_path, monkeypatch)
    inserter = make_app()
    node_app = make_app(queues={"default": 10})
    for name in [*broken.values(), "tr_no_such_module.task"]:
        inserter.worker(name=name, max_attempts=3)(lambda job: None)

    ran: list[int] = []

    @node_app.worker(name="tr.batch_mate")
    def mate(job: baton.Job) -> None:
        ran.append(job.id)

    inserter.register(mate)
    bad = {kind: await inserter.insert(inserter.new(name, {})) for kind, name in broken.items()}
    ghost = await inserter.insert(inserter.new("tr_no_such_module.task", {}))
    mates = await inserter.insert_all([mate.new({"i": i}) for i in range(3)])
    ids = [j.id for j in [*bad.values(), ghost, *mates]]
    if mode == "drain":
        assert await node_app.drain() == {"retryable": 5, "completed": 3}
    else:
        async with node_app:
            await wait_for(lambda: _settled(node_app, ids), 10)
            assert node_app.running
    assert sorted(ran) == sorted(j.id for j in mates)
    for j in mates:
        stored = await node_app.get_job(j.id)
        assert (stored.state, stored.attempt, stored.max_attempts, stored.errors) == ("completed", 1, 20, [])
    causes = {
        "runtime": "RuntimeError: DATABASE_PASSWORD is not set",
        "syntax": "SyntaxError",
        "dependency": "ModuleNotFoundError: No module named 'tr_no_such_dependency_at_all'",
        "exit": "SystemExit: 3",
    }
    for kind, job in bad.items():
        stored = await node_app.get_job(job.id)
        assert (stored.state, stored.attempt, stored.max_attempts) == ("retryable", 1, 3), kind
        assert 14 <= _secs_from_now(stored.scheduled_at) <= 19.5, "the default backoff"
        [entry] = stored.errors
        module = broken[kind].removesuffix(".task")
        assert entry["error"].startswith(
            f"WorkerImportError: worker: {broken[kind]!r} cannot be imported: its module {module!r} raised "
        ), entry["error"]
        assert causes[kind] in entry["error"]
        # The module's own traceback, then the worker's.
        assert f"{module}.py" in entry["traceback"] and "WorkerImportError" in entry["traceback"], entry["traceback"]
    stored = await node_app.get_job(ghost.id)
    assert stored.state == "retryable" and stored.errors[0]["error"].startswith("LookupError: unknown worker")


async def test_a_worker_module_that_fails_at_import_is_discarded_after_its_attempts(make_app, tmp_path, monkeypatch):
    broken = _broken_modules(tmp_path, monkeypatch)["runtime"]
    inserter = make_app()
    inserter.worker(name=broken, max_attempts=1)(lambda job: None)
    job = await inserter.insert(inserter.new(broken, {}))
    assert await make_app().drain() == {"discarded": 1}
    stored = await inserter.get_job(job.id)
    assert stored.max_attempts == 1 and "DATABASE_PASSWORD is not set" in stored.errors[0]["error"]


async def test_unknown_worker_in_drain_records_the_error(make_app):
    inserter = make_app()
    drainer = make_app()

    @inserter.worker(name="ghost.drained", max_attempts=1)
    def ghost(job: baton.Job) -> None:
        return None

    job = await inserter.insert(ghost.new({}))
    assert await drainer.drain() == {"discarded": 1}
    assert "ghost.drained" in (await drainer.get_job(job.id)).errors[0]["error"]


@pytest.mark.parametrize("mode", MODES)
async def test_args_that_do_not_decode_are_an_error_and_the_node_keeps_running(app, db_url, engine_name, mode):
    ran: list[dict[str, Any]] = []

    @app.worker(name="tr.decode")
    def w(job: baton.Job) -> None:
        ran.append(job.args)

    bad = await app.insert(w.new({"ok": False}))
    good = await app.insert(w.new({"ok": True}))
    if engine_name == "sqlite":
        _sql(db_url, "UPDATE baton_jobs SET args = %s WHERE id = %s", ["{not json", bad.id])
    else:
        _sql(db_url, "UPDATE baton_jobs SET args = %s::jsonb WHERE id = %s", ["[1, 2, 3]", bad.id])
    counts = await run(app, mode, [bad.id, good.id])
    if mode == "drain":
        assert counts == {"retryable": 1, "completed": 1}
    assert ran == [{"ok": True}], "the worker never sees undecodable args"
    stored = await app.get_job(bad.id)
    assert stored.state == "retryable"
    assert len(stored.errors) == 1
    assert "args" in stored.errors[0]["error"] and "decode" in stored.errors[0]["error"]
    assert (await app.get_job(good.id)).state == "completed"
