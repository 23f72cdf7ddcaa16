"""Live updates: one background task per dashboard process polls the database's change stamp
and tells every connected browser (Server-Sent Events) that something changed; browsers then
re-fetch the part of the page they show. The poll interval doubles (up to `max_interval`)
while the stamp query is slow or failing, and runs only while someone is watching."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .. import read

if TYPE_CHECKING:
    from ..app import Baton

log = logging.getLogger("baton.dashboard")

SLOW = 0.1
"""A stamp query slower than this (seconds) makes the next poll wait twice as long."""
KEEPALIVE = 15.0


class Broadcaster:
    """Fans the change notifications of one poller out to every subscriber."""

    def __init__(self, app: Baton, interval: float = 1.0, max_interval: float = 30.0) -> None:
        self.app = app
        self.base_interval = interval
        self.max_interval = max_interval
        self.interval = interval
        self.polls = 0
        self._subscribers: set[asyncio.Queue[str]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stamp: str | None = None

    @property
    def subscribers(self) -> int:
        """How many browsers listen now."""
        return len(self._subscribers)

    def publish(self, what: str = "change") -> None:
        """Tell every subscriber (a full queue already holds a pending notice: skip it)."""
        for queue in self._subscribers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(what)

    async def _run(self) -> None:
        while self._subscribers:
            started = time.perf_counter()
            try:
                stamp = await self.app.engine.run(read.bounded, 5.0, read.change_stamp)
                took = time.perf_counter() - started
                self.polls += 1
                if self._stamp is not None and stamp != self._stamp:
                    self.publish()
                self._stamp = stamp
                if took > SLOW:
                    self.interval = min(self.max_interval, self.interval * 2)
                else:
                    self.interval = max(self.base_interval, self.interval / 2)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.interval = min(self.max_interval, self.interval * 2)
                log.warning("dashboard change poll failed (next in %.0fs): %s", self.interval, exc)
            await asyncio.sleep(self.interval)
        self._task = None

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[str]]:
        """A queue receiving "change" notices while the context is open."""
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        self._subscribers.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="baton-dashboard-poller")
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    async def close(self) -> None:
        """Stop the poller (the dashboard is shutting down)."""
        self._subscribers.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def event_stream(broadcaster: Broadcaster) -> AsyncIterator[str]:
    """The text/event-stream body of one browser's connection."""
    async with broadcaster.subscribe() as queue:
        yield "retry: 3000\n\n"
        while True:
            try:
                what = await asyncio.wait_for(queue.get(), KEEPALIVE)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            yield f"event: {what}\ndata: {broadcaster.interval:.1f}\n\n"
