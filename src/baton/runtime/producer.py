"""A producer runs one queue on one node: it fetches up to `limit - running` jobs in one
statement, starts them, and fetches again when woken (insert notification, freed capacity
while more jobs may wait, or the poll timer as fallback)."""

from __future__ import annotations

import asyncio
import logging
import uuid as uuidlib
from typing import TYPE_CHECKING, Any

from .. import telemetry
from .._tasks import cancel_and_wait
from ..job import Job
from ..store import jobs as store
from ..store import transitions

if TYPE_CHECKING:
    from .parts import NodeParts

log = logging.getLogger("baton.producer")


class Producer:
    """Fetches and runs the jobs of one queue on one node."""

    def __init__(self, node: NodeParts, queue: str, limit: int, paused: bool = False) -> None:
        self.node = node
        self.queue = queue
        self.limit = limit
        self.paused = paused
        self.uuid = str(uuidlib.uuid4())  # new at every start: acks are fenced on it
        self.running: dict[int, asyncio.Task[None]] = {}
        self._jobs: dict[int, Job] = {}  # the running attempts, by job id
        self._given_up: set[tuple[int, int]] = set()  # (job id, attempt) given up on a lost lease
        # True from a lost lease until it is regained: fetch nothing (docs/lease.md).
        self.suspended = False
        self._wake = asyncio.Event()
        self._more = True
        self._signals = 0  # bumped by every wake-up, so one arriving mid-fetch is not lost
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._stray: set[int] = set()
        self.fetched = 0

    def row(self, uuid: str | None = None) -> dict[str, Any]:
        """This producer's `baton_producers` row (under another `uuid` when re-registering)."""
        return {
            "uuid": uuid or self.uuid,
            "node": self.node.name,
            "queue": self.queue,
            # Each producer says how long it may stay silent, so the lifeline of a node with
            # other settings never mistakes it for dead.
            "meta": {
                "limit": self.limit,
                "paused": self.paused,
                "running": len(self.running),
                "stale_after": self.node.app.stale_after,
            },
        }

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"baton-producer-{self.queue}")

    def wake(self) -> None:
        """Jobs may be waiting: fetch as soon as there is capacity."""
        self._more = True
        self._signals += 1
        self._wake.set()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.wake()

    def scale(self, limit: int) -> None:
        self.limit = limit
        self.wake()

    async def _run(self) -> None:
        poll = self.node.app.poll_interval
        backoff = 0.05
        while not self._stopping:
            free = 0 if self.paused or self.suspended else self.limit - len(self.running)
            if free > 0 and self._more:
                signals = self._signals
                uuid = self.uuid
                try:
                    jobs = await self.node.engine.run_relaxed(
                        transitions.fetch_jobs, self.queue, self.node.name, uuid, free
                    )
                    backoff = 0.05
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("producer %s could not fetch (%s); retrying in %.2fs", self.queue, exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if jobs and (self.suspended or uuid != self.uuid):
                    # The fetch hung past the lease's end: these attempts are no longer ours to
                    # run. They are handed back when the lease is regained (or rescued).
                    log.warning(
                        "queue %s: a fetch returned %d jobs after this node lost its lease; not running them: %s",
                        self.queue,
                        len(jobs),
                        [j.id for j in jobs][:20],
                    )
                    continue
                self._more = len(jobs) == free or self._signals != signals
                self.fetched += len(jobs)
                for job in jobs:
                    self._jobs[job.id] = job
                    self.running[job.id] = asyncio.create_task(self._execute(job), name=f"baton-job-{job.id}")
                if self._more:
                    # Let finished tasks hand back their slots so the next fetch is a batch.
                    await asyncio.sleep(0)
                    continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=poll)
            except TimeoutError:
                self._more = True  # polling fallback
            self._wake.clear()

    async def _execute(self, job: Job) -> None:
        try:
            ack = await self.node.executor.run(job)
        except asyncio.CancelledError:
            # Cancelled by a cancel signal (the job is already `cancelled`), by shutdown
            # (release_on_shutdown hands it back) or by a lost lease (the attempt belongs to
            # the rescue); in every case there is nothing to ack.
            self._forget(job)
            return
        except Exception:  # pragma: no cover - the executor turns errors into acks
            log.exception("executor failed on job %s", job.id)
            self._forget(job)
            return
        if ack is not None and (job.id, job.attempt) in self._given_up:
            # Given up on a lost lease while it ran: whatever it returned, the attempt is the
            # rescuer's now; writing it could mark done a job that stopped half-way.
            log.info("job %s attempt %s ended after its lease was lost; no outcome written", job.id, job.attempt)
        elif ack is not None:
            self.node.acker.push(ack)
        self._forget(job)
        if self._more:
            self._wake.set()

    def _forget(self, job: Job) -> None:
        self._given_up.discard((job.id, job.attempt))
        if self._jobs.get(job.id) is job:  # not a later attempt of the same job fetched meanwhile
            self.running.pop(job.id, None)
            del self._jobs[job.id]

    async def reconcile(self, pending_acks: set[int]) -> list[int]:
        """Hand back jobs the database says this producer is executing but it is not running
        (a fetch whose response was lost on the way). A job is only released once it has
        been seen stray at two heartbeats in a row, so a fetch in flight is never touched."""
        ids = set(await self.node.engine.run(store.executing_ids, self.uuid))
        stray = ids - self.running.keys() - pending_acks
        confirmed, self._stray = stray & self._stray, stray - self._stray
        if not confirmed:
            return []
        released = await self.node.engine.run(
            store.release_jobs_of_producer,
            sorted(confirmed),
            self.uuid,
            f"producer {self.uuid} of node {self.node.name} was not running it (a lost fetch response)",
            "orphaned",
        )
        handed_back = [j.id for j in released]
        if handed_back:
            log.warning("queue %s: handed back %d stray jobs %s", self.queue, len(handed_back), handed_back[:20])
        return handed_back

    def cancel_local(self, ids: set[int]) -> int:
        """Cancel running tasks of these job ids; returns how many were running here."""
        hit = 0
        for job_id in ids & self.running.keys():
            job = self._jobs.get(job_id)
            if job is not None and job._taken_away is None:
                job._taken_away = "the job was cancelled"  # what a sync worker sees in job.cancelled()
            self.running[job_id].cancel()
            hit += 1
        return hit

    def lose_lease(self, reason: str) -> tuple[list[int], list[int]]:
        """The node lost its lease: fetch nothing more, cancel the running async attempts and
        flag the sync ones (`job.cancelled()`); none of them will be acked. Returns the ids
        (cancelled, flagged)."""
        self.suspended = True
        cancelled: list[int] = []
        flagged: list[int] = []
        for job_id, task in list(self.running.items()):
            job = self._jobs.get(job_id)
            if job is None:
                continue
            if job._taken_away is None:
                job._taken_away = reason
            self._given_up.add((job_id, job.attempt))
            if self.node.executor.is_async(job):
                task.cancel()
                cancelled.append(job_id)
            else:
                flagged.append(job_id)  # a thread cannot be stopped: it sees job.cancelled()
        return cancelled, flagged

    def regain_lease(self, uuid: str) -> None:
        """The node registered again: go on fetching as the new producer `uuid`, so every late
        ack of an attempt made under the old one is fenced."""
        self.uuid = uuid
        self.suspended = False
        self.wake()

    async def stop_fetching(self) -> None:
        self._stopping = True
        self._wake.set()
        await cancel_and_wait(self._task)
        self._task = None

    def emit(self, action: str) -> None:
        telemetry.emit(
            ("baton", "producer", action),
            {"limit": self.limit},
            {"queue": self.queue, "uuid": self.uuid, "node": self.node.name},
        )
