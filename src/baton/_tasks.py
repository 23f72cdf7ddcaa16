"""Small asyncio helpers shared by the runtime and the engines."""

from __future__ import annotations

import asyncio
from typing import Any


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
