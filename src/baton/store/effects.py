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
    # The caller wakes its own producers of released_queues when the commit returns (an ack
    # on a node): the wake-up notifications name `origin`, so that node does not fetch twice.
    wakes_locally: bool = False


WAKE_TAG = "\x1f"

# Live step events go out in batches: one notification carries a JSON array of events (compact
# JSON, each with its type first), as many as fit under BATCH_BYTES, whether Python
# (`step_batches`) or PostgreSQL (`baton_notify_steps`, migration 009) wrote it. So every such
# payload starts with STEP_EVENTS; a node where nothing subscribed to step events skips them on
# that prefix instead of parsing them. Finished events go alone, as one object.
STEP_EVENTS = '[{"type":"step"'
BATCH_BYTES = 7_900


def step_batches(events: list[str]) -> list[str]:
    """Step event payloads (JSON objects) packed in order into JSON arrays of at most
    BATCH_BYTES bytes each (an event is never split)."""
    batches: list[str] = []
    batch: list[str] = []
    size = 0
    for event in events:
        n = len(event.encode()) + 1
        if batch and size + n + 1 > BATCH_BYTES:
            batches.append("[" + ",".join(batch) + "]")
            batch, size = [], 0
        batch.append(event)
        size += n
    if batch:
        batches.append("[" + ",".join(batch) + "]")
    return batches


def wake_payload(queue: str, origin: str) -> str:
    """An insert-channel payload naming the instance that wakes its own producers already."""
    return f"{WAKE_TAG}{origin}{WAKE_TAG}{queue}"


def parse_wake(payload: str) -> tuple[str, str | None]:
    """(queue, origin) of an insert-channel payload; origin is None for a plain queue name."""
    if payload.startswith(WAKE_TAG):
        origin, sep, queue = payload[1:].partition(WAKE_TAG)
        if sep:
            return queue, origin
    return payload, None


async def publish(conn: Conn, effects: Effects) -> None:
    """Notify other nodes of what a transaction released or cancelled (sent on commit)."""
    if effects.released_queues:
        queues = sorted(effects.released_queues)
        if effects.wakes_locally and effects.origin:
            queues = [wake_payload(q, effects.origin) for q in queues]
        await conn.notify("insert", queues)
    if effects.signal_cancel:
        await conn.notify("signal", [dumps({"action": "cancel", "ids": sorted(set(effects.signal_cancel))})])
