"""A producer runs one queue on one node: it fetches up to `limit - running` jobs in one
statement, starts them, and fetches again when woken (insert notification, freed capacity
while more jobs may wait, or the poll timer as fallback). A queue with limits across nodes
(docs/limits.md) fetches through the limited fetch instead, which takes the queue's turn."""

from __future__ import annotations

import asyncio
import logging
import uuid as uuidlib
from typing import TYPE_CHECKING, Any

from .. import telemetry
from .._tasks import cancel_and_wait, watch
from ..job import Job, UsageRecord
from ..limits import QueueLimits
from ..store import jobs as store
from ..store import limits as limits_store
from ..store import transitions
from ..store.jobs import Ack
from ..store.transitions import FetchKey

if TYPE_CHECKING:
    from .parts import NodeParts

log = logging.getLogger("baton.producer")


class _Wakeup:
    """An event the fetch loop waits on with a timeout. `asyncio.wait_for(event.wait(), t)`
    runs the wait as a Task of its own, so a wake-up reaches the loop in three turns of the
    event loop; here `set` resolves the waiting future itself: one turn (the path from an
    insert's notification to the fetch, on an idle node)."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[bool] | None = None

    def set(self) -> None:
        self._set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def clear(self) -> None:
        self._set = False

    async def wait(self, timeout: float) -> bool:
        """True once set (already, or within `timeout` seconds); False when the time ran out."""
        if self._set:
            return True
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class Producer:
    """Fetches and runs the jobs of one queue on one node."""

    def __init__(
        self, node: NodeParts, queue: str, limit: int, paused: bool = False, limits: QueueLimits | None = None
    ) -> None:
        self.node = node
        self.queue = queue
        self.limit = limit
        self.paused = paused
        # What this node declares (published in its row; None: it follows the other nodes) and
        # what the queue obeys: the newest declaration of any live node (limits.effective).
        self.declared = limits
        self.limits = limits or QueueLimits()
        self._capped = False  # the last fetch left jobs waiting because of a limit
        self._reopen_in: float | None = None
        self._jobs: dict[int, Job] = {}  # the running attempts, by job id
        self._given_up: set[tuple[int, int]] = set()  # (job id, attempt) given up on a lost lease
        # True from a lost lease until it is regained: fetch nothing (docs/lease.md).
        self.suspended = False
        self.uuid = str(uuidlib.uuid4())  # new at every start: acks are fenced on it
        # The running attempts' handles: a Task, or for a sync worker's attempt without a
        # timeout a ThreadAttempt (no Task: see Executor.start_in_threads). Both can be
        # awaited and cancelled.
        self.running: dict[int, asyncio.Future[Any]] = {}
        self._wake = _Wakeup()
        self._more = True
        self._signals = 0  # bumped by every wake-up, so one arriving mid-fetch is not lost
        self._after: FetchKey | None = None  # where the next fetch may start (see fetch_next)
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._stray: set[int] = set()
        self.fetched = 0
        self.reserved = 0  # slots an ack in flight set aside for steps it releases (adopt)
        self.fetching = 0  # slots a fetch in flight may fill

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
                **({} if self.declared is None else self.declared.meta()),
            },
        }

    def start(self) -> None:
        self._task = watch(asyncio.create_task(self._run(), name=f"baton-producer-{self.queue}"))

    def wake(self) -> None:
        """Jobs may be waiting: fetch as soon as there is capacity (scanning from the start of
        the queue, since they may sort before the last job fetched)."""
        self._after = None
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

    def declare(self, limits: QueueLimits) -> None:
        """Declare new limits for the queue (`scale_queue`): they are the newest, so every node
        obeys them, at once when the signal arrives, else from its next refresh."""
        self.declared = limits
        self.follow(limits)

    def follow(self, limits: QueueLimits) -> None:
        """Obey `limits` (the newest any live node declares) from the next fetch on."""
        if limits != self.limits:
            log.info("queue %s now obeys %s", self.queue, limits.meta())
            self.limits = limits
            self.wake()

    async def _run(self) -> None:
        # Nothing may end the fetch loop but a stop: a producer that died would leave its node
        # alive, heartbeating, and running nothing (a MemoryError while a job leaked memory).
        while not self._stopping:
            try:
                await self._fetch_loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("producer %s failed; fetching again in 1 s", self.queue)
                self._more = True
                await asyncio.sleep(1.0)

    async def _fetch_loop(self) -> None:
        poll = self.node.app.poll_interval
        backoff = 0.05
        loop = asyncio.get_running_loop()
        full_scan_at = -poll
        while not self._stopping:
            free = 0 if self.paused or self.suspended else self.limit - len(self.running) - self.reserved
            if free > 0 and self._more:
                signals = self._signals
                # Continue after the last job fetched while batches come back full, scanning
                # from the start at least once per poll interval (see fetch_next).
                after = self._after if loop.time() - full_scan_at < poll else None
                uuid = self.uuid
                try:
                    if self.limits:
                        # One statement on PostgreSQL (its function holds the queue's turn
                        # until it commits), one BEGIN IMMEDIATE transaction on SQLite.
                        limited = await self.node.engine.run_relaxed(
                            limits_store.fetch_limited_jobs, self.queue, self.node.name, uuid, free, self.limits
                        )
                        jobs, self._capped, self._reopen_in = limited.jobs, limited.capped, limited.reopen_in
                    else:
                        self.fetching = free
                        try:
                            jobs, last = await self.node.engine.run_relaxed(
                                transitions.fetch_next, self.queue, self.node.name, uuid, free, after
                            )
                        finally:
                            self.fetching = 0
                        if after is None:
                            full_scan_at = loop.time()
                        if self._signals == signals:
                            self._after = last if len(jobs) == free else None
                        self._capped = False
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
                self._run_jobs(jobs)
                if self._more:
                    # Let finished tasks hand back their slots so the next fetch is a batch.
                    await asyncio.sleep(0)
                    continue
            timeout = poll
            if self._capped and self._reopen_in is not None:
                # Held back by the rate limit: fetch again when the oldest start leaves the window.
                timeout = min(poll, self._reopen_in + 0.005)
            if not await self._wake.wait(timeout):
                self._more = True  # polling fallback
            self._wake.clear()

    def free_for_offer(self) -> int:
        """Slots an ack may fill with the steps it releases (see Node.flush_acks): none while
        paused, stopping, without a lease or limited, and none taken by a fetch in flight.
        None either while more jobs may wait in the queue (`_more`): the producer fetches
        those now, in parallel with the ack, and its next fetch takes what the ack released;
        slots set aside for the ack would hold that fetch back until the ack returns (100
        chains behind 50 slots ran one batch at a time: 8 700 links/s, 12 800 without)."""
        if self.paused or self.suspended or self._stopping or self.limits or self._more:
            return 0
        return max(0, self.limit - len(self.running) - self.reserved - self.fetching)

    def reserve(self, n: int) -> None:
        """Set `n` free slots aside for an ack in flight (`free_for_offer` allows it)."""
        self.reserved += n

    def unreserve(self, n: int) -> None:
        """The ack returned: its slots are free again (or filled by `adopt`)."""
        self.reserved -= n
        if self._more:
            self._wake.set()

    async def adopt(self, jobs: list[Job]) -> None:
        """Run jobs an ack moved to `executing` for this producer (released workflow steps).
        If the producer stopped or lost its lease meanwhile, they are not its to run: a
        stopping node hands them back at once; after a lost lease they belong to the rescue."""
        if self._stopping:
            try:
                await self.node.engine.run(store.release_on_shutdown, [j.id for j in jobs], self.uuid, self.node.name)
            except Exception as exc:
                log.error("could not hand back %d released steps (%s); the lifeline will rescue them", len(jobs), exc)
            return
        if self.suspended or jobs[0].attempted_by != [self.node.name, self.uuid]:
            log.warning(
                "queue %s: %d released steps reached this node after it lost its lease; not running them: %s",
                self.queue,
                len(jobs),
                [j.id for j in jobs][:20],
            )
            return
        self._run_jobs(jobs)

    def _run_jobs(self, jobs: list[Job]) -> None:
        """Start jobs fetched for this producer: sync ones without a timeout on the threads at
        once (Executor.start_in_threads), the others as tasks."""
        self.fetched += len(jobs)
        try:
            for job in jobs:
                self._jobs[job.id] = job
            threaded = self.node.executor.start_in_threads(jobs, self)
            for job, attempt in zip(jobs, threaded, strict=True):
                self.running[job.id] = (
                    attempt
                    if attempt is not None
                    else asyncio.create_task(self._execute(job), name=f"baton-job-{job.id}")
                )
        except Exception:
            # The jobs not started are `executing` here but run nowhere: `reconcile` hands
            # them back at the next heartbeats.
            not_started = [job.id for job in jobs if job.id not in self.running]
            log.exception("queue %s: could not start jobs %s; they will be handed back", self.queue, not_started[:20])
            for job in jobs:
                if job.id not in self.running and self._jobs.get(job.id) is job:
                    del self._jobs[job.id]

    async def _execute(self, job: Job) -> None:
        try:
            ack = await self.node.executor.run(job)
        except asyncio.CancelledError:
            # Cancelled by a cancel signal (the job is already `cancelled`), by shutdown
            # (release_on_shutdown hands it back) or by a lost lease (the attempt belongs to
            # the rescue); in every case there is nothing to ack.
            self.dropped(job)
            return
        except Exception:  # pragma: no cover - the executor turns errors into acks
            log.exception("executor failed on job %s", job.id)
            self._forget(job)
            return
        self.settled(job, ack)

    def settled(self, job: Job, ack: Ack | None) -> None:
        """`job`'s attempt ended with `ack` (None: nothing to write); an `AttemptOwner` method,
        also called for the attempts that ran in threads without a Task."""
        if ack is not None and (job.id, job.attempt) in self._given_up:
            # Given up on a lost lease or taken away by a stop while it ran: whatever it
            # returned, the attempt is the rescuer's (or the hand-back's) now; writing it could
            # mark done a job that stopped half-way.
            log.info("job %s attempt %s ended after it was taken away; no outcome written", job.id, job.attempt)
        elif ack is not None:
            self.node.acker.push(ack)
        self._forget(job)
        if self._more:
            self._wake.set()

    def dropped(self, job: Job) -> None:
        """`job`'s attempt was cancelled (a cancel signal, shutdown, a lost lease): nothing to
        ack; the `AttemptOwner` method for attempts running in threads without a Task."""
        self._forget(job)
        self.slots_freed()

    def _forget(self, job: Job) -> None:
        self._given_up.discard((job.id, job.attempt))
        if self._jobs.get(job.id) is job:  # not a later attempt of the same job fetched meanwhile
            self.running.pop(job.id, None)
            del self._jobs[job.id]

    def slots_freed(self) -> None:
        """Jobs of this queue left `executing` in the database (acked, cancelled): if a limit
        held jobs back, their turn may have come."""
        if self._capped and not self._stopping:
            self.wake()

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

    def take_away(self, reason: str) -> tuple[list[Job], list[int], list[asyncio.Future[Any]]]:
        """The node stops: take the attempts still running away, as a lost lease does, before
        the hand-back is written. Async attempts (and process ones: their child is killed) are
        cancelled; a thread cannot be stopped, so a sync attempt is flagged (`job.cancelled()`
        turns True, `job.raise_if_cancelled()` raises). None of them will write an outcome,
        whatever it returns: the hand-back is its outcome. Returns the jobs, the ids flagged,
        and the attempts' handles to wait for (then `hand_over`)."""
        jobs: list[Job] = []
        flagged: list[int] = []
        handles = list(self.running.values())
        for job_id, attempt in list(self.running.items()):
            job = self._jobs.get(job_id)
            if job is None:  # pragma: no cover - running and _jobs change together
                attempt.cancel()
                continue
            jobs.append(job)
            if job._taken_away is None:
                job._taken_away = reason
            self._given_up.add((job_id, job.attempt))  # an outcome it returns anyway is not written
            if self.node.executor.is_async(job):
                attempt.cancel()
            else:
                flagged.append(job_id)
        return jobs, flagged, handles

    def hand_over(self, jobs: list[Job]) -> list[tuple[Job, list[UsageRecord]]]:
        """After `take_away` (and a wait for the attempts to end): cancel those still running
        (a sync worker that did not stop: its thread runs on, its outcome is ignored) and take
        the usage every attempt of `jobs` recorded, to be written with the hand-back. What a
        worker records after this is dropped with it."""
        for job in jobs:
            attempt = self.running.get(job.id)
            if attempt is not None and self._jobs.get(job.id) is job:
                attempt.cancel()
        used: list[tuple[Job, list[UsageRecord]]] = []
        for job in jobs:
            records, job._usage = job._usage, None
            if records:
                used.append((job, records))
        return used

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
