"""Small asyncio helpers shared by the runtime and the engines."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("baton.node")


def watch(task: asyncio.Task[Any]) -> asyncio.Task[Any]:
    """Log, at CRITICAL, a background loop that ends with an exception: such a loop (a
    producer, the acker, the listener, the heartbeat) is meant to end only when cancelled, and
    one that dies unseen leaves its node alive and doing nothing. Returns `task`."""
    task.add_done_callback(_ended)
    return task


def _ended(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.critical("background task %s died: %r", task.get_name(), exc, exc_info=exc)


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has unwound; whatever it raised on the way
    out is of no interest to a caller that is shutting it down."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass
