"""A thread pool of daemon threads for sync workers, and the hand-off of their outcomes back to
the event loop. The stdlib pool joins its threads at exit, so one stuck sync job would hold a
stopping node forever; after the shutdown grace period a node must be able to exit and let its
unfinished jobs be rescued elsewhere."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_Work = tuple[Future[Any] | None, Callable[..., Any], tuple[Any, ...], dict[str, Any]]
log = logging.getLogger("baton.threads")

# Pauses between tries of a step that failed for want of memory (a job leaking memory holds
# it until its allocation fails and its frames are freed): about 5 s in all.
MEMORY_PATIENCE = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.0, 1.0, 1.0)


def _report(message: str, exc: BaseException) -> None:
    """Log what went wrong on a pool thread; with no memory left even that may fail."""
    try:
        log.error(message, exc)
    except BaseException:
        pass


class DaemonThreadPool(Executor):
    """`concurrent.futures.Executor` whose threads never delay interpreter exit."""

    def __init__(self, max_workers: int, name: str = "baton-worker") -> None:
        self._max = max(1, max_workers)
        self._name = name
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for work that no queued item has claimed
        self._unclaimed = 0  # queued items no thread has claimed (a thread could not be started)
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

    def call_many(self, fn: Callable[..., Any], argss: Iterable[tuple[Any, ...]], /) -> None:
        """`call(fn, *args)` for each of `argss`, taking the pool's lock once."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new work after shutdown")
            for args in argss:
                self._work.put((None, fn, args, {}))
                self._hire()

    def _put(self, item: _Work) -> None:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._work.put(item)
            self._hire()

    def _hire(self) -> None:
        # Under the lock, for one item just queued: an idle thread takes it, else a new one.
        # Starting a thread can fail (no memory for its stack, a process limit): the item
        # stays queued, unclaimed, for the next thread that frees up or is started.
        if self._idle > 0:
            self._idle -= 1
            return
        self._unclaimed += 1
        self._staff()

    def _staff(self) -> None:
        # Under the lock: start threads for the unclaimed items, up to the pool's size.
        while self._unclaimed > 0 and len(self._threads) < self._max:
            try:
                thread = threading.Thread(target=self._loop, name=f"{self._name}-{len(self._threads)}", daemon=True)
                thread.start()
            except (RuntimeError, MemoryError) as exc:  # "can't start new thread"
                _report("could not start a worker thread (%r); its work waits for a free one", exc)
                return
            self._threads.append(thread)
            self._unclaimed -= 1

    def _loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            try:
                if future is None:
                    fn(*args)
                elif future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args, **kwargs))
                    except BaseException as exc:
                        future.set_exception(exc)
            except BaseException as exc:  # the thread must live on: the pool would shrink for good
                _report("work on a pool thread raised %r", exc)
            del item, future
            with self._lock:
                if self._unclaimed > 0:
                    self._unclaimed -= 1  # this thread takes an item queued while none was free
                else:
                    self._idle += 1

    def restaff(self) -> None:
        """Try again to start threads for work that none could be started for (called at each
        heartbeat of a node): with no thread running at all, nothing else would."""
        with self._lock:
            if not self._shutdown:
                self._staff()

    def abandon(self) -> None:
        """A running thread will not come back soon (its job timed out): allow one more."""
        with self._lock:
            self._max += 1
            if not self._shutdown:
                self._staff()

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


class LoopOutbox(Generic[T]):
    """Items put by pool threads, handed to `deliver` on one event loop in batches: the first
    item of a batch schedules one callback on the loop, the ones put before it runs ride along.
    `call_soon_threadsafe` once per item wakes the loop once per item, and with many short sync
    jobs those wake-ups (and the GIL passing back and forth with them) cost more than the jobs.
    `deliver` runs on the loop and must not raise."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[list[T]], None]) -> None:
        self.loop = loop
        self._handle = deliver
        self._lock = threading.Lock()
        self._items: list[T] = []
        self._scheduled = False

    def put(self, item: T) -> None:
        """From any thread: hand `item` to `deliver` soon, on the loop."""
        with self._lock:
            self._items.append(item)
            if self._scheduled:
                return
            self._scheduled = True
        for pause in MEMORY_PATIENCE:
            try:
                self.loop.call_soon_threadsafe(self._deliver)
                return
            except RuntimeError:  # the loop is closed: nobody waits for these items any more
                return
            except MemoryError:  # another thread holds the memory for now (a leaking job)
                time.sleep(pause)
        # Never scheduled: the next item's put schedules the delivery of this one too.
        with self._lock:
            self._scheduled = False

    def _deliver(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._scheduled = False
        self._handle(items)


_Outcome = tuple[asyncio.Future[Any], BaseException | None, Any]


class LoopHandoff(LoopOutbox[_Outcome]):
    """Runs sync functions on a `DaemonThreadPool` and hands their outcomes back to one event
    loop's futures in batches (a `LoopOutbox`), with no `concurrent.futures.Future` per call."""

    def __init__(self, pool: DaemonThreadPool, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop, _settle)
        self._pool = pool

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """`fn(*args)` on a pool thread; the returned future (of this loop) gets its outcome."""
        future = self.loop.create_future()
        self._pool.call(self._work, future, fn, args)
        return future

    def _work(self, future: asyncio.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            outcome: _Outcome = (future, None, fn(*args))
        except BaseException as exc:  # handed to the awaiting coroutine, which decides
            outcome = (future, exc, None)
        self.put(outcome)


def _settle(done: list[_Outcome]) -> None:
    for future, exc, result in done:
        if future.done():  # the awaiting task was cancelled meanwhile
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
