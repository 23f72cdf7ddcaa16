"""`assert_enqueued`, `refute_enqueued`, `all_enqueued`: what a test expects to be waiting in
the database. Plain functions: they query through the engine's synchronous path, so sync and
async tests (inside a running event loop too) call them the same way."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..app import Baton
from ..errors import ValidationError
from ..job import STATES, Job
from ..store import jobs as store
from ..worker import FunctionWorker, Worker, WorkerDef

ENQUEUED = ("available", "scheduled", "retryable", "suspended")
"""The states a job waits in before it runs (the default of every helper here)."""

_POLL = 0.02
_LIMIT = 1_000_000


def worker_name(worker: Any) -> str:
    """The stored worker name of a worker given as a name, `@app.worker` function, Worker
    class or definition."""
    if isinstance(worker, str):
        return worker
    if isinstance(worker, FunctionWorker | WorkerDef):
        return worker.name
    if isinstance(worker, type) and issubclass(worker, Worker):
        return str(worker.name)
    raise ValidationError(
        "worker", f"must be a worker name, an @app.worker function or a baton.Worker class, got {worker!r:.80}"
    )


def _subset(expected: Any, actual: Any) -> bool:
    """`expected` is contained in `actual`: dict keys recursively, everything else by equality."""
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(k in actual and _subset(v, actual[k]) for k, v in expected.items())
    return bool(expected == actual)


def _states(states: Any) -> list[str]:
    if isinstance(states, str) or not isinstance(states, Sequence):
        raise ValidationError("states", f"must be a list of states, e.g. ['available'], got {states!r:.80}")
    bad = [s for s in states if s not in STATES]
    if bad:
        raise ValidationError("states", f"unknown state(s) {bad}; choose from {list(STATES)}")
    return list(states)


def _query(app: Baton, queue: str | None, worker: str | None, states: list[str]) -> list[Job]:
    if not isinstance(app, Baton):
        raise ValidationError("app", f"must be a baton.Baton, got {type(app).__name__}")
    jobs = app.engine.run_sync(store.list_jobs, queue=queue, worker=worker, states=states, limit=_LIMIT)
    return sorted(jobs, key=lambda j: j.id)


def _matches(job: Job, args: Any, meta: Any, tags: Any, priority: Any) -> bool:
    if args is not None and not _subset(args, job.args):
        return False
    if meta is not None and not _subset(meta, job.meta):
        return False
    if tags is not None and not set(tags) <= set(job.tags):
        return False
    return priority is None or job.priority == priority


def all_enqueued(
    app: Baton,
    *,
    worker: Any = None,
    args: Mapping[str, Any] | None = None,
    queue: str | None = None,
    meta: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    priority: int | None = None,
    states: Sequence[str] = ENQUEUED,
) -> list[Job]:
    """Every enqueued job matching the filters, oldest first. `args` and `meta` match as a
    subset (only the keys given are compared, recursively); `tags` as a subset too."""
    name = None if worker is None else worker_name(worker)
    jobs = _query(app, queue, name, _states(states))
    return [j for j in jobs if _matches(j, args, meta, tags, priority)]


def _describe(filters: dict[str, Any]) -> str:
    given = {k: v for k, v in filters.items() if v is not None}
    return ", ".join(f"{k}={v!r}" for k, v in given.items()) or "any job"


def _line(job: Job) -> str:
    return f"  {job.id} {job.worker} queue={job.queue} state={job.state} args={job.args!r:.200}"


def _listing(app: Baton, states: list[str]) -> str:
    jobs = _query(app, None, None, states)
    if not jobs:
        return f"no job is {' or '.join(states)}"
    lines = [_line(j) for j in jobs[:50]]
    more = f"\n  ... and {len(jobs) - 50} more" if len(jobs) > 50 else ""
    return f"{len(jobs)} job(s) are {' or '.join(states)}:\n" + "\n".join(lines) + more


def _wait(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValidationError("wait", f"must be a number of seconds >= 0, got {value!r:.80}")
    return float(value)


def assert_enqueued(
    app: Baton,
    *,
    worker: Any = None,
    args: Mapping[str, Any] | None = None,
    queue: str | None = None,
    meta: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    priority: int | None = None,
    states: Sequence[str] = ENQUEUED,
    wait: float = 0,
) -> list[Job]:
    """Assert at least one enqueued job matches (see `all_enqueued`); returns the matches.
    With `wait`, keep looking for up to that many seconds (for jobs inserted by other threads or
    processes). The AssertionError lists the jobs that are enqueued."""
    filters = {"worker": worker, "args": args, "queue": queue, "meta": meta, "tags": tags, "priority": priority}
    found = _matches_within(app, filters, states, wait)
    if found:
        return found
    raise AssertionError(
        f"expected a job matching {_describe(_shown(filters))} to be enqueued; {_listing(app, _states(states))}"
    )


def refute_enqueued(
    app: Baton,
    *,
    worker: Any = None,
    args: Mapping[str, Any] | None = None,
    queue: str | None = None,
    meta: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    priority: int | None = None,
    states: Sequence[str] = ENQUEUED,
    wait: float = 0,
) -> None:
    """Assert no enqueued job matches (see `all_enqueued`). With `wait`, keep checking for that
    many seconds that none appears."""
    filters = {"worker": worker, "args": args, "queue": queue, "meta": meta, "tags": tags, "priority": priority}
    found = _matches_within(app, filters, states, wait)
    if found:
        listing = "\n".join(_line(j) for j in found)
        raise AssertionError(f"expected no job matching {_describe(_shown(filters))} to be enqueued, found:\n{listing}")


def _shown(filters: dict[str, Any]) -> dict[str, Any]:
    worker = filters["worker"]
    return {**filters, "worker": None if worker is None else worker_name(worker)}


def _matches_within(app: Baton, filters: dict[str, Any], states: Sequence[str], wait: Any) -> list[Job]:
    """The enqueued jobs matching `filters`, looked for until some are found or `wait` seconds
    have passed; [] if none was found by then (what both assert and refute wait for)."""
    deadline = time.monotonic() + _wait(wait)
    while True:
        found = all_enqueued(app, **filters, states=states)
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(_POLL)
