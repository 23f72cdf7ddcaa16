"""The acker writes attempt outcomes in batches: whatever finished while the previous batch
was being written goes out in the next one (group commit), so a busy node acks many jobs per
round trip and an idle one acks each job at once."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .._tasks import cancel_and_wait, watch
from ..errors import DatabaseUnavailable
from ..job import MAX_DELAY, storable
from ..store.jobs import Ack
from ..worker import default_backoff

if TYPE_CHECKING:
    from .parts import NodeParts

log = logging.getLogger("baton.acker")

MAX_BATCH = 1_000


class Acker:
    """Buffers acks for one node and flushes them in batches, retrying through outages."""

    def __init__(self, node: NodeParts) -> None:
        self.node = node
        self._buffer: list[Ack] = []
        self._event = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.flushed = 0

    def start(self) -> None:
        self._task = watch(asyncio.create_task(self._run(), name="baton-acker"))

    def push(self, ack: Ack) -> None:
        self._buffer.append(ack)
        self._idle.clear()
        self._event.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def pending_ids(self) -> set[int]:
        """Jobs whose outcome is known here but not yet written (including the batch in flight)."""
        return {a.job.id for a in self._buffer}

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            await self._event.wait()
            self._event.clear()
            while self._buffer:
                batch = self._buffer[:MAX_BATCH]
                try:
                    await self.node.flush_acks(batch)
                    backoff = 0.05
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not isinstance(exc, DatabaseUnavailable) and await self._isolate(batch, exc):
                        backoff = 0.05
                        continue
                    level = logging.WARNING if isinstance(exc, DatabaseUnavailable) else logging.ERROR
                    log.log(
                        level,
                        "could not write %d acks (%s); retrying in %.2fs",
                        len(batch),
                        exc,
                        backoff,
                        exc_info=not isinstance(exc, DatabaseUnavailable),
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                del self._buffer[: len(batch)]
                self.flushed += len(batch)
            self._idle.set()

    async def _isolate(self, batch: list[Ack], error: Exception) -> bool:
        """A batch failed for another reason than the database being away (an outcome it cannot
        store, say): write its acks one by one so that one bad ack cannot hold back the others,
        and replace an ack that still fails by one the database can store. False if the
        database went away meanwhile (the rest stays buffered for the retry loop)."""
        log.warning("could not write a batch of %d acks (%s); writing them one by one", len(batch), error)
        for ack in batch:
            try:
                try:
                    await self.node.flush_acks([ack])
                except DatabaseUnavailable:
                    raise
                except Exception as exc:
                    log.error(
                        "could not write the outcome of job %s (%s: %s); recording a plain error instead",
                        ack.job.id,
                        type(exc).__name__,
                        exc,
                        exc_info=True,
                    )
                    await self.node.flush_acks([_fallback(ack, exc)])
            except DatabaseUnavailable:
                return False
            except Exception:
                log.exception("could not write even the fallback outcome of job %s", ack.job.id)
                return False
            del self._buffer[0]  # the batch is the head of the buffer, written in order
            self.flushed += 1
        return True

    async def drain(self, timeout: float) -> bool:
        """Wait until every buffered ack is written; False if `timeout` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._buffer:
            log.error(
                "%d acks could not be written before shutdown; those jobs will be rescued and run again: %s",
                len(self._buffer),
                [a.job.id for a in self._buffer][:20],
            )


def _fallback(ack: Ack, exc: Exception) -> Ack:
    """The same outcome without what could not be stored: no recorded result, meta or logs,
    a delay that can be scheduled, and an error saying why (the job keeps its state, so a
    completed job is not run again)."""
    reason = storable(f"{type(exc).__name__}: {exc}")[:2_000]
    if ack.error is not None:
        error = f"{storable(ack.error)[:2_000]} (the full outcome could not be stored: {reason})"
    else:
        error = f"the outcome of this attempt could not be stored: {reason}"
    ack.job._logs.clear()
    return Ack(
        ack.job,
        ack.state,
        # The executor checks a worker's backoff; this is the last guard (NaN, infinity, a
        # date past year 9999 would fail the fallback too, and hold back every later ack).
        delay=ack.delay if 0 <= ack.delay <= MAX_DELAY else default_backoff(ack.job.attempt),
        error=error,
        extra_attempts=ack.extra_attempts,
        run_ms=ack.run_ms,
        reason=ack.reason,
    )
