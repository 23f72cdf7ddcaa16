"""A thread pool of daemon threads for sync workers. The stdlib pool joins its threads at exit,
so one stuck sync job would hold a stopping node forever; after the shutdown grace period a
node must be able to exit and let its unfinished jobs be rescued elsewhere."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any


class DaemonThreadPool(Executor):
    """`concurrent.futures.Executor` whose threads never delay interpreter exit."""

    def __init__(self, max_workers: int, name: str = "baton-worker") -> None:
        self._max = max(1, max_workers)
        self._name = name
        self._work: queue.SimpleQueue[
            tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None
        ] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._work.put((future, fn, args, kwargs))
            if self._idle == 0 and len(self._threads) < self._max:
                thread = threading.Thread(target=self._loop, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= 1 if self._idle > 0 else 0
        return future

    def _loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
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
                if item is not None:
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
