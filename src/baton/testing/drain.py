"""Running enqueued jobs in-process for tests: `drain` (manual mode) and the loop plumbing that
lets inline mode run jobs for an insert made on any thread or event loop.

Jobs run through `Baton.drain`, the same fetch / execute / ack path a node uses, so a test sees
what production would: JSON round trips, outcomes, retries, workflow releases and cascades."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..app import Baton
from ..engines.base import Conn
from ..errors import BatonError, ValidationError
from ..job import Job

T = TypeVar("T")

# Set while a testing drain runs jobs: inserts those jobs make are picked up by the same drain
# (recursion) instead of starting a nested one. Jobs inherit it (sync workers run in a copy of
# the drain's context), so it also covers inserts from worker threads.
IN_DRAIN: contextvars.ContextVar[bool] = contextvars.ContextVar("baton_testing_in_drain", default=False)

DEFAULT_MAX_ROUNDS = 1000


class DrainError(AssertionError):
    """A drain did not settle: jobs kept being rescheduled (a job that snoozes forever)."""


class JobFailed(AssertionError):
    """Jobs run inline ended `discarded` because their worker raised (after every attempt).
    `jobs` holds them as stored, each with its `errors` (message and traceback per attempt)."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = jobs
        lines = [f"{len(jobs)} job(s) failed when run inline:"]
        for job in jobs:
            last = job.errors[-1] if job.errors else {}
            lines.append(f"  job {job.id} {job.worker} (attempt {job.attempt}/{job.max_attempts}): {last.get('error')}")
            if last.get("traceback"):
                lines.append("    " + str(last["traceback"]).rstrip().replace("\n", "\n    "))
        lines.append("(use baton.testing.inline(app, raise_errors=False) to inspect failures instead)")
        super().__init__("\n".join(lines))


async def _stage_all(conn: Conn, queue: str | None) -> int:
    rows = await conn.fetch("stage_all_jobs", {"queue": queue})
    queues = sorted({r["queue"] for r in rows})
    if queues:
        await conn.notify("insert", queues)
    return len(rows)


def _merge(into: dict[str, int], counts: dict[str, int]) -> None:
    for state, n in counts.items():
        into[state] = into.get(state, 0) + n


async def drain_async(
    app: Baton, queue: str | None = None, *, with_scheduled: bool = False, max_rounds: int = DEFAULT_MAX_ROUNDS
) -> dict[str, int]:
    """`drain` on the running event loop."""
    if not isinstance(with_scheduled, bool):
        raise ValidationError("with_scheduled", f"must be True or False, got {with_scheduled!r:.80}")
    if not isinstance(max_rounds, int) or isinstance(max_rounds, bool) or max_rounds < 1:
        raise ValidationError("max_rounds", f"must be an integer >= 1, got {max_rounds!r:.80}")
    token = IN_DRAIN.set(True)
    try:
        totals: dict[str, int] = {}
        for _ in range(max_rounds):
            staged = await app.engine.run(_stage_all, queue) if with_scheduled else 0
            if totals and not staged:
                return totals  # the last round left nothing scheduled or retryable
            counts = await app.drain(queue)
            _merge(totals, counts)
            if not with_scheduled or not counts:
                return totals
        pending = await app.list_jobs(queue=queue, states=["scheduled", "retryable", "available"], limit=20)
        raise DrainError(
            f"drain did not settle after {max_rounds} rounds; still pending: {pending!r:.500} "
            "(a job that snoozes every time runs forever with with_scheduled=True)"
        )
    finally:
        IN_DRAIN.reset(token)


def drain(
    app: Baton, queue: str | None = None, *, with_scheduled: bool = False, max_rounds: int = DEFAULT_MAX_ROUNDS
) -> Any:
    """Run enqueued jobs in this process until none is left (in `queue`, or every queue), the
    way a node would, and return how many attempts ended in each state.

    Jobs those jobs insert run in the same drain (recursion). With `with_scheduled=True`,
    scheduled jobs, snoozed jobs and retries run now instead of at their time, so a failing
    job runs all its attempts and ends `discarded` (never a hang); `max_rounds` bounds a job
    that snoozes forever (then `DrainError`). Without it, only jobs already due run.

    From synchronous code it returns the counts; inside a running event loop it returns an
    awaitable (`counts = await drain(app)`), so async jobs run on the test's own loop."""
    if not isinstance(app, Baton):
        raise ValidationError("app", f"must be a baton.Baton, got {type(app).__name__}")

    def make() -> Awaitable[dict[str, int]]:
        return drain_async(app, queue, with_scheduled=with_scheduled, max_rounds=max_rounds)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run_blocking(app, make, home=HOMES.get(app))
    return make()


_private_lock = threading.Lock()

# The event loop an app's async connections belong to in a test (set by the testing modes).
HOMES: weakref.WeakKeyDictionary[Baton, asyncio.AbstractEventLoop] = weakref.WeakKeyDictionary()


def run_blocking(app: Baton, make: Callable[[], Awaitable[T]], home: asyncio.AbstractEventLoop | None) -> T:
    """Run the coroutine `make()` to completion from synchronous code.

    On `home` (the event loop of the test that opened the app) when that loop runs in another
    thread, so the app's connection pools stay on one loop. Otherwise on a private loop in this
    thread; the app's connections are then released at the end (they reopen on next use), since
    PostgreSQL async pools belong to the loop that opened them."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if home is not None and home.is_running() and not home.is_closed():
        if running is home:
            raise BatonError(
                "inline mode: a synchronous insert was made on the thread of the event loop that runs the test, "
                "which cannot run the jobs without blocking that loop; call the sync code through "
                "`await asyncio.to_thread(...)`, or use `await app.insert(...)`"
            )
        future = asyncio.run_coroutine_threadsafe(_awaited(make), home)
        return future.result()
    if running is not None:
        raise BatonError("internal: run_blocking called inside a running event loop")

    async def run_and_release() -> T:
        try:
            return await make()
        finally:
            if not app.running:
                await app.close()

    with _private_lock:
        return asyncio.run(run_and_release())


async def _awaited(make: Callable[[], Awaitable[T]]) -> T:
    return await make()
