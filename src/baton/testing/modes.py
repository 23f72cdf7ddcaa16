"""Testing modes: `inline(app)` runs jobs at insert time, `manual(app)` leaves them enqueued.

A mode belongs to the app object, not to the current thread or task: entering one replaces the
app's insert methods for the block, so inserts from any thread, task or request handler that
uses this app follow it. Inline mode inserts normally, then drains in-process (the node's own
fetch / execute / ack path) until nothing is left, so whole workflows run in dependency order
and every outcome is what a node would record."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import warnings
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ..app import Baton
from ..errors import BatonError, ValidationError
from ..job import Job
from ..store import jobs as store
from .drain import HOMES, IN_DRAIN, JobFailed, drain_async, run_blocking

_ASYNC_METHODS = ("insert", "insert_all", "insert_workflow", "insert_workflows", "append_workflow")
_SYNC_METHODS = ("insert_sync", "insert_all_sync", "insert_workflow_sync", "insert_workflows_sync")
_ALL_LIMIT = 1_000_000

# Set while an insert method runs on behalf of an outer one (insert -> insert_all), so only the
# outermost call runs the jobs.
_NESTED: contextvars.ContextVar[bool] = contextvars.ContextVar("baton_testing_nested", default=False)

_STACKS: weakref.WeakKeyDictionary[Baton, list[Mode]] = weakref.WeakKeyDictionary()
_stacks_lock = threading.Lock()


def current_mode(app: Baton) -> str | None:
    """ "inline", "manual", or None when no testing mode is active on `app`."""
    stack = _STACKS.get(app)
    return stack[-1].kind if stack else None


class Mode:
    """A testing mode on one app; use it as `with` or `async with` block (see `inline`, `manual`)."""

    def __init__(self, app: Baton, kind: str, raise_errors: bool = True) -> None:
        if not isinstance(app, Baton):
            raise ValidationError("app", f"must be a baton.Baton, got {type(app).__name__}")
        if not isinstance(raise_errors, bool):
            raise ValidationError("raise_errors", f"must be True or False, got {raise_errors!r:.80}")
        self.app, self.kind, self.raise_errors = app, kind, raise_errors
        self._pending = False  # jobs inserted on a caller's connection, not visible before its commit
        self._pending_on: list[Any] = []  # those connections (to check their transaction at the end)
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"<baton.testing {self.kind} mode on {self.app!r}>"

    # -- entering and leaving ----------------------------------------------------------

    def __enter__(self) -> Mode:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with _stacks_lock:
            if loop is not None:
                HOMES[self.app] = loop
            _STACKS.setdefault(self.app, []).append(self)
            _install(self.app)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None and self.kind == "inline" and self._pending:
                self._check_committed()
                try:
                    asyncio.get_running_loop()
                except RuntimeError:
                    self._pending = False
                    run_blocking(self.app, self._run_jobs, HOMES.get(self.app))
                else:
                    warnings.warn(
                        "baton.testing.inline: jobs inserted on your own connection (conn=) were not run, since a "
                        "plain `with` block cannot await them on the running loop; use `async with inline(app):` "
                        "or `await baton.testing.drain(app)`",
                        stacklevel=2,
                    )
        finally:
            self._leave()

    async def __aenter__(self) -> Mode:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None and self.kind == "inline" and self._pending:
                self._check_committed()
                self._pending = False
                await self._run_jobs()
        finally:
            self._leave()

    def _check_committed(self) -> None:
        """Before running the jobs inserted on callers' connections at the end of the block:
        each of those connections must have ended its transaction. One still inside it holds
        jobs nobody else can see yet (and, on SQLite, the write lock Baton's own connection
        would wait for): running them could only find nothing or wait, so fail at once."""
        open_ = [c for c in self._pending_on if _in_transaction(c)]
        self._pending_on = []
        if not open_:
            return
        self._pending = False
        raise BatonError(
            "baton.testing.inline: jobs were inserted on your own connection (conn=, or a Django task enqueued "
            "inside transaction.atomic()) whose transaction is still open when the inline block ends, so they "
            "are not committed: Baton's connections cannot see them, and they cannot run. End that transaction "
            "inside the inline block (`with inline(app): with transaction.atomic(): ...`), or, with Django, "
            "use django.test.TransactionTestCase instead of TestCase (a TestCase runs every test inside a "
            "transaction that is never committed)"
        )

    def _leave(self) -> None:
        with _stacks_lock:
            stack = _STACKS.get(self.app, [])
            if self in stack:
                stack.remove(self)
            _install(self.app)

    # -- running jobs -------------------------------------------------------------------

    async def _run_jobs(self) -> None:
        """Drain everything (retries and scheduled jobs now), then raise JobFailed for jobs whose
        worker raised on their last attempt."""
        loop = asyncio.get_running_loop()
        lock = self._locks.setdefault(loop, asyncio.Lock())
        async with lock:
            before = {j.id for j in await self.app.list_jobs(states=["discarded"], limit=_ALL_LIMIT)}
            await drain_async(self.app, with_scheduled=True)
            if not self.raise_errors:
                return
            failed = [
                j
                for j in await self.app.list_jobs(states=["discarded"], limit=_ALL_LIMIT)
                if j.id not in before and _raised(j)
            ]
        if failed:
            raise JobFailed(sorted(failed, key=lambda j: j.id))

    async def run_async(self) -> None:
        """Run the jobs from a coroutine: on the app's home loop (where its connections live)."""
        loop = asyncio.get_running_loop()
        home = HOMES.get(self.app)
        if home is None or home.is_closed() or not home.is_running():
            HOMES[self.app] = loop
            home = loop
        if home is loop:
            await self._run_jobs()
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._run_jobs(), home))

    def run_sync(self) -> None:
        """Run the jobs from synchronous code (any thread)."""
        run_blocking(self.app, self._run_jobs, HOMES.get(self.app))

    def mark_pending(self, conn: Any = None) -> None:
        """A job went in on the caller's connection: run it when the block ends (or at the next insert)."""
        self._pending = True
        if conn is not None and not any(c is conn for c in self._pending_on):
            self._pending_on.append(conn)


def _in_transaction(conn: Any) -> bool:
    """Whether a caller's connection (sqlite3 or psycopg, sync or async) is inside a transaction."""
    try:
        info = getattr(conn, "info", None)
        status = getattr(info, "transaction_status", None)
        if status is not None:  # psycopg: IDLE, or UNKNOWN once closed, means nothing is pending
            return status.name in ("ACTIVE", "INTRANS", "INERROR")
        return bool(getattr(conn, "in_transaction", False))  # sqlite3
    except Exception:  # a closed sqlite3 connection: its transaction ended with it
        return False


def _raised(job: Job) -> bool:
    """Whether the job's last attempt ended in an exception (not a Discard/Cancel outcome)."""
    if not job.errors:
        return False
    text = str(job.errors[-1].get("error") or "")
    return not text.startswith(("discarded: ", "cancelled: "))


def inline(app: Baton, *, raise_errors: bool = True) -> Mode:
    """Run jobs at insert time, in this process, until nothing is left: `with inline(app): ...`.

    Every insert on `app` (from any thread or task) returns after its jobs, the jobs they insert
    and — for a workflow — every step in dependency order have run. Retries, snoozes and
    scheduled jobs run at once instead of waiting, so a failing job runs all its attempts and
    the test never hangs. Returned jobs are re-read: `job.state`, `job.errors`, `job.meta`
    show the outcome. A job whose worker raised on its last attempt makes the insert raise
    `JobFailed` (an AssertionError with the traceback) unless `raise_errors=False`.

    Jobs inserted on the caller's own connection (`conn=`) are not visible before that
    transaction commits: they run at the next insert or when the block ends. If that
    transaction is still open when the block ends (a Django `TestCase`), they cannot run:
    leaving the block raises `BatonError` at once."""
    return Mode(app, "inline", raise_errors)


def manual(app: Baton) -> Mode:
    """Leave inserted jobs enqueued: `with manual(app): ...` (also inside an inline block).
    Check them with `assert_enqueued` and run them with `baton.testing.drain(app)`."""
    return Mode(app, "manual")


# -- the insert methods of an app in inline mode ------------------------------------------


def _install(app: Baton) -> None:
    """Make `app`'s insert methods follow the mode on top of its stack (called under the lock)."""
    for name in (*_ASYNC_METHODS, *_SYNC_METHODS):
        app.__dict__.pop(name, None)
    stack = _STACKS.get(app)
    if not stack or stack[-1].kind != "inline":
        return
    mode = stack[-1]
    for name in _ASYNC_METHODS:
        setattr(app, name, _async_wrapper(mode, getattr(type(app), name).__get__(app)))
    for name in _SYNC_METHODS:
        setattr(app, name, _sync_wrapper(mode, getattr(type(app), name).__get__(app)))


def _async_wrapper(mode: Mode, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def run_inline(*args: Any, **kwargs: Any) -> Any:
        if _NESTED.get() or IN_DRAIN.get():
            return await original(*args, **kwargs)
        token = _NESTED.set(True)
        try:
            result = await original(*args, **kwargs)
        finally:
            _NESTED.reset(token)
        if kwargs.get("conn") is not None:
            mode.mark_pending(kwargs["conn"])
            return result
        await mode.run_async()
        ids = _ids(result)
        if not ids:
            return result
        return _reorder(result, await mode.app.list_jobs(ids=ids, limit=len(ids)))

    return run_inline


def _sync_wrapper(mode: Mode, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def run_inline(*args: Any, **kwargs: Any) -> Any:
        if _NESTED.get() or IN_DRAIN.get():
            return original(*args, **kwargs)
        token = _NESTED.set(True)
        try:
            result = original(*args, **kwargs)
        finally:
            _NESTED.reset(token)
        if kwargs.get("conn") is not None:
            mode.mark_pending(kwargs["conn"])
            return result
        mode.run_sync()
        ids = _ids(result)
        if not ids:
            return result
        return _reorder(result, mode.app.engine.run_sync(store.list_jobs, ids=ids, limit=len(ids)))

    return run_inline


def _ids(result: Any) -> list[int]:
    if isinstance(result, Job):
        return [result.id]
    if isinstance(result, list) and result and all(isinstance(j, Job) for j in result):
        return [j.id for j in result]
    return []


def _reorder(result: Any, fresh: list[Job]) -> Any:
    """The inserted job(s) as stored now, in the order the insert returned them."""
    by_id = {j.id: j for j in fresh}
    if isinstance(result, Job):
        return _with_conflict(by_id.get(result.id, result), result)
    return [_with_conflict(by_id.get(j.id, j), j) for j in result]


def _with_conflict(fresh: Job, inserted: Job) -> Job:
    fresh.conflict = inserted.conflict
    return fresh
