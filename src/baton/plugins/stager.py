"""Stager: moves due `scheduled` and `retryable` jobs to `available` and wakes their queues."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..store import jobs as store
from .base import Plugin, count

if TYPE_CHECKING:
    from ..host import Host


class Stager(Plugin):
    """Stage due jobs every `interval` seconds (default 1), at most `limit` per statement."""

    name = "stager"

    def __init__(self, interval: float = 1.0, limit: int = 10_000) -> None:
        super().__init__(interval)
        self.limit = count("limit", limit)

    async def _sweep(self, app: Host) -> dict[str, Any]:
        staged: dict[str, int] = {}
        while True:
            batch = await app.engine.run(store.stage_jobs, self.limit)
            for queue, n in batch.items():
                staged[queue] = staged.get(queue, 0) + n
            if sum(batch.values()) < self.limit:
                break
        app.wake_producers(staged)
        return {"staged": staged, "staged_count": sum(staged.values())}
