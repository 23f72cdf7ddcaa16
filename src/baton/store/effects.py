"""What one transaction changed that must be acted on after it commits: queues to wake,
running jobs to signal, steps cancelled by a cascade, workflows whose announcement it claimed.
The ack, cancel and repair paths record into an `Effects`; the workflow and chain resolution
add to it; the caller publishes it (NOTIFY inside the transaction, local delivery after)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..engines.base import Conn
from ..job import Job, dumps


@dataclass(slots=True)
class Cascaded:
    """A step cancelled because a dependency failed or vanished."""

    job: Job
    reason: str  # cancelled | discarded | deleted (what happened upstream)


@dataclass(slots=True)
class Effects:
    """Side effects of one transaction, acted on by the caller after commit."""

    origin: str = ""
    released_queues: set[str] = field(default_factory=set)
    released_ids: list[int] = field(default_factory=list)
    signal_cancel: list[int] = field(default_factory=list)
    cascaded: list[Cascaded] = field(default_factory=list)
    finished: list[dict[str, Any]] = field(default_factory=list)


async def publish(conn: Conn, effects: Effects) -> None:
    """Notify other nodes of what a transaction released or cancelled (sent on commit)."""
    if effects.released_queues:
        await conn.notify("insert", sorted(effects.released_queues))
    if effects.signal_cancel:
        await conn.notify("signal", [dumps({"action": "cancel", "ids": sorted(set(effects.signal_cancel))})])
