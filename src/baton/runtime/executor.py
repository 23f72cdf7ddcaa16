"""Run one attempt of one job and turn what happened into an `Ack`. Sync workers run in a
thread pool so the event loop never blocks; async workers run on the loop.

Sync workers without a timeout take a shorter road (`start_in_threads`): no asyncio Task per
attempt; the attempt is prepared on the loop, runs and becomes its `Ack` in a pool thread, and
the finished attempts come back to the loop in batches (`LoopOutbox`), where their telemetry
events are emitted and their owner (the producer) gets the acks."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import os
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor as ThreadPool
from typing import Any, Protocol

from .. import telemetry
from ..errors import JobCancelled, ValidationError
from ..job import MAX_DELAY, Cancel, Discard, Job, PriceFn, Snooze, check_json, meta_count, storable
from ..store.jobs import Ack
from ..worker import WorkerDef, default_backoff
from ..workflows.builder import Graft
from .processes import ProcessPool, ProcessTimedOut, Ticket, target_of, unpack
from .threads import MEMORY_PATIENCE, DaemonThreadPool, LoopHandoff, LoopOutbox

log = logging.getLogger("baton.executor")

START, STOP, EXCEPTION = telemetry.events.JOB_START, telemetry.events.JOB_STOP, telemetry.events.JOB_EXCEPTION


def _mark_began(began: asyncio.Future[None]) -> None:
    if not began.done():
        began.set_result(None)


class _TimedOut(Exception):
    """The worker's timeout elapsed."""


def _trace(exc: BaseException) -> str:
    """The traceback of `exc`, which is being handled, for the job's errors. After a
    MemoryError the finished frames it went through are cleared first: their locals (what a
    leaking worker hoarded) would keep the memory taken while the traceback is formatted and
    the ack is built. With no memory for it, no traceback."""
    if isinstance(exc, MemoryError):
        traceback.clear_frames(exc.__traceback__)
    try:
        return traceback.format_exc()
    except MemoryError:
        return ""


def _backoff(job: Job, worker: WorkerDef | None) -> tuple[float, str | None]:
    """The seconds before `job`'s next attempt after it failed, and None, or, when the worker's
    backoff cannot be used, the default backoff and why not. A backoff that raises or returns
    anything but a number of seconds from 0 to MAX_DELAY (what `Snooze` and `schedule_in`
    accept) is a bug in it: NaN, infinity, 1e12 cannot be scheduled, and an ack carrying one
    could not be written. The reason is logged and added to the attempt's error."""
    if worker is None:
        return default_backoff(job.attempt), None
    try:
        value = worker.backoff(job)
    except Exception as exc:
        log.exception("backoff of worker %s failed on job %s; using the default backoff", job.worker, job.id)
        problem = f"its backoff raised {type(exc).__name__}: {exc!s:.200}"
    else:
        try:
            delay = float(value)
        except (TypeError, ValueError, OverflowError):
            delay = math.nan
        if 0 <= delay <= MAX_DELAY:  # False for NaN
            return delay, None
        problem = f"its backoff returned {value!r:.80}, not a number of seconds from 0 to {MAX_DELAY:.0f}"
        log.error("worker %s: %s for job %s; using the default backoff", job.worker, problem, job.id)
    delay = default_backoff(job.attempt)
    return delay, f"{problem}; retried after the default backoff of {delay:.0f}s"


def _queue_ms(job: Job) -> float:
    if job.attempted_at is None or job.scheduled_at is None:
        return 0.0
    return max(0.0, (job.attempted_at - job.scheduled_at).total_seconds() * 1000)


# An attempt's end before its telemetry event: the ack (None: nothing to ack, the attempt was
# taken away), its duration in ms, and the exception it failed with (None: a stop event).
_Done = tuple[Ack | None, float, BaseException | None]


class AttemptOwner(Protocol):
    """Who runs attempts through `Executor.start_in_threads` (a producer)."""

    def settled(self, job: Job, ack: Ack | None) -> None:
        """`job`'s attempt ended (on the loop, after its telemetry event); `ack` is None when
        there is nothing to write."""

    def dropped(self, job: Job) -> None:
        """`job`'s attempt was cancelled (`ThreadAttempt.cancel()`): its outcome, whenever its
        thread returns, is ignored."""


class ThreadAttempt(asyncio.Future[Ack | None]):
    """A sync job's attempt running in the thread pool without an asyncio Task: what its
    producer holds in `running`. It resolves (to the ack) when the outcome is back on the loop.
    `cancel()` behaves like cancelling the Task of any other attempt: the thread cannot be
    stopped, so it runs on, but its outcome is ignored and the owner's `dropped` runs soon."""

    def __init__(self, job: Job, owner: AttemptOwner, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self.job = job
        self.owner = owner

    def cancel(self, msg: Any = None) -> bool:
        if self.done():
            return False
        self.add_done_callback(self._dropped)  # run by the loop soon, as a Task's handler would be
        return super().cancel(msg)

    def _dropped(self, _: asyncio.Future[Ack | None]) -> None:
        self.owner.dropped(self.job)


# One attempt handed to a pool thread: its handle, worker, start time, context, and the outbox
# of its loop that takes its end back.
_Threaded = tuple[ThreadAttempt, WorkerDef, float, contextvars.Context, LoopOutbox[tuple[ThreadAttempt, _Done]]]


class Executor:
    """Runs attempts for one node."""

    def __init__(
        self,
        resolve: Callable[[str], WorkerDef | None],
        threads: ThreadPool,
        node: str,
        pricing: PriceFn | None = None,
        *,
        process_pool_size: int | None = None,
    ) -> None:
        self._resolve = resolve
        self._threads = threads
        self._node = node
        self._handoff: LoopHandoff | None = None
        self._outbox: LoopOutbox[tuple[ThreadAttempt, _Done]] | None = None
        self._process_pool_size = process_pool_size
        self.processes: ProcessPool | None = None  # started with the first process worker's job
        self._pricing = pricing

    def close(self) -> None:
        """Stop the worker processes, if any were started (blocks while they exit)."""
        if self.processes is not None:
            self.processes.close()
            self.processes = None

    def is_async(self, job: Job) -> bool:
        """Whether cancelling `job`'s task stops its worker: an async worker on the event loop,
        or a process worker (its child is killed); a thread cannot be stopped."""
        try:
            worker = self._resolve(job.worker)
        except Exception:  # its module fails at import (WorkerImportError): nothing runs it
            return False
        return worker is not None and (worker.is_async or worker.options.executor == "process")

    async def run(self, job: Job) -> Ack | None:
        """Run `job`'s current attempt; never raises except CancelledError. None when the
        worker stopped because its attempt was taken away (`job.raise_if_cancelled()`): there
        is nothing to ack, the attempt belongs to whoever took it."""
        started = time.perf_counter()
        begun = self._begin(job, started)
        if not isinstance(begun, WorkerDef):
            return self._emit(job, begun)
        worker = begun
        timeout = worker.options.timeout
        try:
            result = await self._call(worker, job, timeout)
        except (Snooze, Cancel, Discard) as outcome:
            result = outcome
        except _TimedOut:
            exc = TimeoutError(f"job exceeded the worker timeout of {timeout:g}s")
            return self._emit(job, self._failed(job, worker, exc, "", started))
        except asyncio.CancelledError:
            raise
        except JobCancelled as exc:
            return self._emit(job, self._stopped(job, worker, exc, started))
        except (Exception, SystemExit) as exc:  # a worker calling sys.exit() must not stop the node
            return self._emit(job, self._failed(job, worker, exc, _trace(exc), started))
        return self._emit(job, self._outcome(job, worker, result, started))

    def _begin(self, job: Job, started: float) -> WorkerDef | _Done:
        """On the loop, before the worker runs: the worker to run, or the attempt's end when it
        cannot run (args that do not decode, an unknown worker, one whose module raises at
        import) or need not (a recorded result)."""
        try:
            worker = self._resolve(job.worker)
        except Exception as exc:  # WorkerImportError: the module exists but raised at import
            return self._failed(job, None, exc, _trace(exc), started)
        if job.decode_error is not None:
            return self._failed(job, worker, ValueError(job.decode_error), "", started)
        if worker is None:
            error = LookupError(
                f"unknown worker {job.worker!r} on node {self._node}: it is not registered here and cannot "
                "be imported; deploy the code that defines it (the job will be retried)"
            )
            return self._failed(job, None, error, "", started)
        if job._recorded is not None:
            # Retry idempotency: an earlier attempt recorded its result, the ack was lost.
            return self._completed(job, worker, job._recorded[0], started, replayed=True)
        self._announce(job)
        return worker

    def _announce(self, job: Job) -> None:
        """The worker is about to run: the start event."""
        if telemetry.has_handlers(START):
            telemetry.emit(
                START, {"queue_time": _queue_ms(job)}, {"job": job, "node": self._node, "worker": job.worker}
            )
        job._price = self._pricing

    def _stopped(self, job: Job, worker: WorkerDef, exc: JobCancelled, started: float) -> _Done:
        if job.cancelled():
            log.info("job %s attempt %s stopped: %s", job.id, job.attempt, exc)
            return None, 0.0, None
        return self._failed(job, worker, exc, _trace(exc), started)

    def _outcome(self, job: Job, worker: WorkerDef, result: Any, started: float) -> _Done:
        """The attempt's end for what the worker returned (or raised: Snooze, Cancel, Discard)."""
        if isinstance(result, Snooze):
            return self._finish(
                job,
                Ack(
                    job,
                    "scheduled",
                    delay=result.seconds,
                    extra_attempts=1,
                    meta={"snoozed": meta_count(job.meta.get("snoozed")) + 1},
                ),
                started,
            )
        if isinstance(result, Cancel):
            return self._finish(job, Ack(job, "cancelled", error=storable(f"cancelled: {result.reason}")), started)
        if isinstance(result, Discard):
            return self._finish(job, Ack(job, "discarded", error=storable(f"discarded: {result.reason}")), started)
        if job._graft or isinstance(result, Graft):
            return self._grafted(job, worker, result, started)
        return self._completed(job, worker, result, started)

    # -- sync workers without an asyncio Task ---------------------------------------------

    def start_in_threads(self, jobs: list[Job], owner: AttemptOwner) -> list[ThreadAttempt | None]:
        """Start the attempts of `jobs` that are sync workers' with no timeout on the thread
        pool, all in one hand-over, and return their handles (None for the other jobs, which
        go through `run`). Must be called on the loop."""
        handles: list[ThreadAttempt | None] = [None] * len(jobs)
        if not isinstance(self._threads, DaemonThreadPool):
            return handles
        loop = asyncio.get_running_loop()
        outbox = self._outbox
        if outbox is None or outbox.loop is not loop:
            outbox = self._outbox = LoopOutbox(loop, self._settle)
        threaded: list[tuple[_Threaded]] = []
        for i, job in enumerate(jobs):
            try:
                worker = self._resolve(job.worker)
            except Exception:  # its module raises at import: `run` records that on the job
                continue
            if (
                worker is None
                or worker.is_async
                or worker.options.executor == "process"
                or worker.options.timeout is not None
                or job.decode_error is not None
                or job._recorded is not None
            ):
                continue
            started = time.perf_counter()
            self._announce(job)
            attempt = handles[i] = ThreadAttempt(job, owner, loop)
            threaded.append(((attempt, worker, started, contextvars.copy_context(), outbox),))
        if threaded:
            self._threads.call_many(self._in_thread, threaded)
        return handles

    def _in_thread(self, item: _Threaded) -> None:
        attempt, worker, started, context, outbox = item
        try:
            done = context.run(self._perform_sync, worker, attempt.job, started)
        except BaseException as exc:  # a pool thread must not die (KeyboardInterrupt...): fail the attempt
            done = self._failed_anyway(attempt.job, worker, exc, started)
        outbox.put((attempt, done))

    def _failed_anyway(self, job: Job, worker: WorkerDef, exc: BaseException, started: float) -> _Done:
        """In a pool thread: the attempt's failure when building it the usual way raised too
        (a MemoryError while another job still holds the memory). Tried again for a few
        seconds, without the traceback: an attempt with no outcome would hold its slot, and
        its job would stay `executing` on a live node, for good."""
        tb = _trace(exc)
        for pause in MEMORY_PATIENCE:
            try:
                return self._failed(job, worker, exc, tb, started)
            except MemoryError:
                tb = ""
                time.sleep(pause)
        return self._failed(job, worker, exc, "", started)

    def _perform_sync(self, worker: WorkerDef, job: Job, started: float) -> _Done:
        """In a pool thread: run the attempt and build its ack (`run` does the same on the loop)."""
        try:
            result = worker.perform(job)
        except (Snooze, Cancel, Discard) as outcome:
            result = outcome
        except JobCancelled as exc:
            return self._stopped(job, worker, exc, started)
        except (Exception, SystemExit) as exc:  # a worker calling sys.exit() must not stop the node
            return self._failed(job, worker, exc, _trace(exc), started)
        return self._outcome(job, worker, result, started)

    def _settle(self, batch: list[tuple[ThreadAttempt, _Done]]) -> None:
        """On the loop: the attempts that came back since the last batch."""
        for attempt, done in batch:
            if attempt.done():  # cancelled meanwhile: its outcome is nobody's
                continue
            try:
                ack = self._emit(attempt.job, done)
                attempt.set_result(ack)
                attempt.owner.settled(attempt.job, ack)
            except Exception:  # pragma: no cover - neither emitting nor settling raises
                log.exception("could not settle the attempt of job %s", attempt.job.id)

    async def _call(self, worker: WorkerDef, job: Job, timeout: float | None) -> Any:
        if worker.options.executor == "process":
            return await self._call_in_process(worker, job, timeout)
        if worker.is_async:
            if timeout is None:
                return await worker.perform(job)
            deadline = asyncio.timeout(timeout)
            try:
                async with deadline:
                    return await worker.perform(job)
            except TimeoutError:
                if deadline.expired():
                    raise _TimedOut from None
                raise
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        if timeout is None:
            if isinstance(self._threads, DaemonThreadPool):
                handoff = self._handoff
                if handoff is None or handoff.loop is not loop:
                    handoff = self._handoff = LoopHandoff(self._threads, loop)
                return await handoff.run(context.run, worker.perform, job)
            return await loop.run_in_executor(self._threads, context.run, worker.perform, job)
        began: asyncio.Future[None] = loop.create_future()

        def run() -> Any:
            loop.call_soon_threadsafe(_mark_began, began)
            return context.run(worker.perform, job)

        future = loop.run_in_executor(self._threads, run)
        # The timeout counts from when a thread picks the job up, not from when it queued.
        await asyncio.wait({began, future}, return_when=asyncio.FIRST_COMPLETED)
        done, _ = await asyncio.wait({future}, timeout=timeout)
        if not done:
            # A thread cannot be stopped: it runs on and its late result is ignored; the pool
            # gets a replacement so abandoned threads never starve later jobs.
            abandon = getattr(self._threads, "abandon", None)
            if abandon is not None:
                abandon()
            raise _TimedOut
        return future.result()

    async def _call_in_process(self, worker: WorkerDef, job: Job, timeout: float | None) -> Any:
        # A node thread waits for the child's reply (and enforces the timeout by killing it).
        if self.processes is None:
            self.processes = ProcessPool(self._process_pool_size or os.cpu_count() or 1)
        pool, ticket = self.processes, Ticket()
        loop = asyncio.get_running_loop()
        try:
            if isinstance(self._threads, DaemonThreadPool):
                handoff = self._handoff
                if handoff is None or handoff.loop is not loop:
                    handoff = self._handoff = LoopHandoff(self._threads, loop)
                reply = await handoff.run(pool.run, ticket, target_of(worker), job, timeout)
            else:
                reply = await loop.run_in_executor(self._threads, pool.run, ticket, target_of(worker), job, timeout)
        except asyncio.CancelledError:
            pool.cancel(ticket)  # kills the child running the job
            raise
        except ProcessTimedOut:
            raise _TimedOut from None
        recorded = worker.options.record or (job.workflow_id is not None and worker.options.record is not False)
        return unpack(job, reply, recorded)

    def _completed(self, job: Job, worker: WorkerDef, result: Any, started: float, replayed: bool = False) -> _Done:
        ack = Ack(job, "completed")
        record = worker.options.record
        if job.workflow_id is not None and record is not False:
            try:
                ack.result_json = check_json("result", result)
            except ValidationError as exc:
                error = TypeError(
                    f"step {job.step!r} returned a value that is not JSON-serialisable ({exc}); return plain "
                    "JSON values or declare the worker with record=False"
                )
                return self._failed(job, worker, error, "", started)
        elif record:
            try:
                check_json("result", result)
            except ValidationError as exc:
                return self._failed(job, worker, TypeError(str(exc)), "", started)
            ack.meta = {"result": result}
        if replayed:
            ack.meta = {**(ack.meta or {}), "replayed": True}
        return self._finish(job, ack, started)

    def _grafted(self, job: Job, worker: WorkerDef, result: Any, started: float) -> _Done:
        """A graft step's attempt: the Graft it returned, planned under the step's name, rides
        on the ack (inserted in the ack's transaction). Anything else fails the attempt."""
        if not job._graft:
            where = f"step {job.step!r}" if job.step else f"job {job.id} (not a workflow step)"
            error: Exception = TypeError(
                f"{where} returned a baton.Graft but is not a graft step; add it with wf.add_graft(name, job, deps=...)"
            )
            return self._failed(job, worker, error, "", started)
        if not isinstance(result, Graft):
            error = TypeError(
                f"graft step {job.step!r} must return baton.Graft(workflow) or baton.Graft.map(worker, items), "
                f"got {type(result).__name__}"
            )
            return self._failed(job, worker, error, "", started)
        assert job.step is not None
        try:
            plan = result.plan(job.step)
        except ValidationError as exc:
            return self._failed(job, worker, exc, "", started)
        unknown = []
        for name in sorted({s.job.worker for s in plan}):
            try:
                if self._resolve(name) is None:
                    unknown.append(name)
            except Exception as exc:  # WorkerImportError: the grafted worker's module fails at import
                return self._failed(job, worker, exc, _trace(exc), started)
        if unknown:
            error = LookupError(
                f"graft step {job.step!r} grafted jobs of unknown worker {unknown[0]!r}: register it with "
                "@app.worker or give an importable path"
            )
            return self._failed(job, worker, error, "", started)
        return self._finish(job, Ack(job, "completed", graft=plan), started)

    def _failed(self, job: Job, worker: WorkerDef | None, exc: BaseException, tb: str, started: float) -> _Done:
        error = storable(f"{type(exc).__name__}: {exc}")
        tb = storable(tb)
        if job.attempt >= job.max_attempts:
            ack = Ack(job, "discarded", error=error, traceback=tb or None)
        else:
            delay, problem = _backoff(job, worker)
            if problem is not None:
                error = f"{error} ({storable(problem)})"
            ack = Ack(job, "retryable", delay=delay, error=error, traceback=tb or None)
        return self._finish(job, ack, started, exc)

    def _finish(self, job: Job, ack: Ack, started: float, exc: BaseException | None = None) -> _Done:
        duration = (time.perf_counter() - started) * 1000
        ack.run_ms = int(duration)
        if job._usage is not None:
            # A copy for this attempt's ack: a timed-out sync worker still running in its
            # thread can no longer add to it. The records stay on the job until the attempt
            # is settled: a stop that hands the attempt back before its ack came back to the
            # loop (the thread ended meanwhile) writes them with the hand-back, and ignores the
            # ack (Producer.hand_back), so they are stored once either way.
            ack.usage = list(job._usage)
        return ack, duration, exc

    def _emit(self, job: Job, done: _Done) -> Ack | None:
        """On the loop: the attempt's stop or exception event; returns its ack."""
        ack, duration, exc = done
        if ack is None:
            return None
        event = EXCEPTION if exc is not None else STOP
        if telemetry.has_handlers(event):
            meta: dict[str, Any] = {"job": job, "state": ack.state, "node": self._node, "worker": job.worker}
            if exc is not None:
                meta["error"] = ack.error
                meta["traceback"] = ack.traceback
            telemetry.emit(event, {"duration": duration, "queue_time": _queue_ms(job)}, meta)
        return ack
