"""A thread pool of daemon threads for sync workers, and the hand-off of their outcomes back to
the event loop. The stdlib pool joins its threads at exit, so one stuck sync job would hold a
stopping node forever; after the shutdown grace period a node must be able to exit and let its
unfinished jobs be rescued elsewhere."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

_Work = tuple[Future[Any] | None, Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonThreadPool(Executor):
    """`concurrent.futures.Executor` whose threads never delay interpreter exit."""

    def __init__(self, max_workers: int, name: str = "baton-worker") -> None:
        self._max = max(1, max_workers)
        self._name = name
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._put((future, fn, args, kwargs))
        return future

    def call(self, fn: Callable[..., Any], /, *args: Any) -> None:
        """Run `fn(*args)` on a pool thread with no future to report through: `fn` hands its
        own outcome back (see `LoopHandoff`) and must not raise."""
        self._put((None, fn, args, {}))

    def _put(self, item: _Work) -> None:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._work.put(item)
            if self._idle == 0 and len(self._threads) < self._max:
                thread = threading.Thread(target=self._loop, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= 1 if self._idle > 0 else 0

    def _loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if future is None:
                fn(*args)
            elif future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:
                    future.set_exception(exc)
            del item, future
            with self._lock:
                self._idle += 1

    def abandon(self) -> None:
        """A running thread will not come back soon (its job timed out): allow one more."""
        with self._lock:
            self._max += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not None and item[0] is not None:
                    item[0].cancel()
        for _ in threads:
            self._work.put(None)
        if wait:
            for thread in threads:
                thread.join()

    @property
    def busy(self) -> int:
        """Threads currently running work."""
        with self._lock:
            return len(self._threads) - self._idle


class LoopHandoff:
    """Runs sync functions on a `DaemonThreadPool` and hands their outcomes back to one event
    loop in batches: the first outcome of a batch schedules one callback on the loop, the ones
    that finish before it runs ride along. `run_in_executor` wakes the loop once per call, and
    with many short sync jobs those wake-ups (and the GIL passing back and forth with them) cost
    more than the jobs."""

    def __init__(self, pool: DaemonThreadPool, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self.loop = loop
        self._lock = threading.Lock()
        self._done: list[tuple[asyncio.Future[Any], BaseException | None, Any]] = []
        self._scheduled = False

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """`fn(*args)` on a pool thread; the returned future (of this loop) gets its outcome."""
        future = self.loop.create_future()
        self._pool.call(self._work, future, fn, args)
        return future

    def _work(self, future: asyncio.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            outcome: tuple[asyncio.Future[Any], BaseException | None, Any] = (future, None, fn(*args))
        except BaseException as exc:  # handed to the awaiting coroutine, which decides
            outcome = (future, exc, None)
        with self._lock:
            self._done.append(outcome)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody awaits these outcomes any more
            pass

    def _deliver(self) -> None:
        with self._lock:
            done, self._done = self._done, []
            self._scheduled = False
        for future, exc, result in done:
            if future.done():  # the awaiting task was cancelled meanwhile
                continue
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)
