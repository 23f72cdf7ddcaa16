"""`perform_job`: run one worker on given args without a database, through the same executor a
node uses, and report what the node would record (a unit test of a worker)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..app import Baton
from ..errors import ValidationError
from ..job import Job
from ..runtime.executor import Executor
from ..runtime.threads import DaemonThreadPool
from ..worker import FunctionWorker, Worker, WorkerDef, import_worker


@dataclass
class PerformResult:
    """The outcome of one `perform_job` attempt, as a node would record it.

    `state`: completed | retryable | discarded (last attempt failed, or Discard) | cancelled
    (Cancel) | scheduled (Snooze). `result`: what the worker returned. `error`/`traceback`:
    the error recorded for the attempt. `snooze`: seconds of a Snooze, `delay`: seconds before
    the retry of a failed attempt. `job`: the job the worker saw."""

    state: str
    job: Job
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    delay: float | None = None
    snooze: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the attempt completed."""
        return self.state == "completed"


def _definition(worker: Any, app: Baton | None) -> WorkerDef:
    if isinstance(worker, FunctionWorker):
        return worker.definition
    if isinstance(worker, WorkerDef):
        return worker
    if isinstance(worker, type) and issubclass(worker, Worker):
        return WorkerDef.from_class(worker)
    if isinstance(worker, str):
        found = app.resolve_worker(worker) if app is not None else import_worker(worker)
        if found is not None:
            return found
        raise ValidationError("worker", f"unknown worker {worker!r}: pass the worker itself or app=")
    raise ValidationError(
        "worker", f"must be an @app.worker function, a baton.Worker class or a worker name, got {worker!r:.80}"
    )


async def perform_job_async(
    worker: Any, args: Mapping[str, Any] | None = None, *, app: Baton | None = None, attempt: int = 1, **options: Any
) -> PerformResult:
    """`perform_job` on the running event loop."""
    definition = _definition(worker, app)
    spec = definition.options.new(args, **options)  # the insert-time validation
    if not isinstance(attempt, int) or isinstance(attempt, bool) or not 1 <= attempt <= spec.max_attempts:
        raise ValidationError("attempt", f"must be an integer from 1 to max_attempts ({spec.max_attempts})")
    now = datetime.now(UTC)
    job = Job(
        id=1,
        state="executing",
        queue=spec.queue,
        worker=spec.worker,
        # The JSON round trip the database makes: tuples become lists, keys become strings.
        args=json.loads(spec.args_json),
        meta=json.loads(spec.meta_json),
        tags=list(spec.tags),
        errors=[],
        attempt=attempt,
        max_attempts=spec.max_attempts,
        priority=spec.priority,
        inserted_at=now,
        scheduled_at=now,
        attempted_at=now,
        attempted_by=["baton-testing", "perform_job"],
    )
    returned: list[Any] = []
    perform = definition.perform
    if definition.is_async:

        async def capture_async(j: Job) -> Any:
            returned.append(await perform(j))
            return returned[-1]

        capture: Any = capture_async
    else:

        def capture_sync(j: Job) -> Any:
            returned.append(perform(j))
            return returned[-1]

        capture = capture_sync
    probe = WorkerDef(
        definition.options,
        capture,
        definition.backoff,
        definition.after_cancelled,
        definition.source,
        definition.is_async,
    )
    threads = DaemonThreadPool(1, "baton-perform")
    try:
        ack = await Executor(lambda name: probe, threads, "baton-testing").run(job)
    finally:
        threads.shutdown(wait=False)
    # None only for an attempt taken away while it ran (a cancel or a lost lease), which
    # nothing can do to a job performed here.
    assert ack is not None
    result = PerformResult(
        state=ack.state,
        job=job,
        result=returned[-1] if returned else None,
        error=ack.error,
        traceback=ack.traceback,
        meta=dict(ack.meta or {}),
    )
    if ack.state == "retryable":
        result.delay = ack.delay
    elif ack.state == "scheduled":
        result.snooze = ack.delay
    return result


def perform_job(
    worker: Any, args: Mapping[str, Any] | None = None, *, app: Baton | None = None, attempt: int = 1, **options: Any
) -> Any:
    """Run `worker` once on `args` as a node would and return a `PerformResult`.

    The args are validated and JSON round-tripped exactly as an insert would (so a tuple
    arrives as a list and non-JSON values fail here), the worker's timeout applies, and a
    return or raise of Snooze / Cancel / Discard, an exception, or a non-JSON recorded result
    becomes the state the node would record. `options` are those of `worker.new` (queue,
    max_attempts, meta, ...); `attempt` sets the attempt number (the last one discards).
    No database is used; to run a job with its database effects, use inline mode or `drain`.

    From synchronous code it returns the result; inside a running event loop it returns an
    awaitable (`result = await perform_job(...)`), so async workers run on the test's loop."""
    coro = perform_job_async(worker, args, app=app, attempt=attempt, **options)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    return coro
