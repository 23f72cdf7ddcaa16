"""`Baton`: configuration, the insert/query API (async, with sync twins sharing one core), and
the start/stop of a node."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import socket
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, overload

from . import telemetry
from ._tasks import cancel_and_wait
from .engines import create_engine, resolve_url
from .errors import BatonError, ValidationError, WorkflowError
from .job import (
    MAX_BIGINT,
    MAX_DELAY,
    MAX_INT4,
    STATES,
    Job,
    JobSpec,
    UsageRecord,
    check_text,
    dumps,
    storable_text_error,
)
from .limits import QueueLimits, effective, parse_global_limit, parse_rate_limit
from .plugins.base import Plugin
from .plugins.stager import Stager
from .runtime.executor import Executor
from .runtime.node import Node
from .runtime.threads import DaemonThreadPool
from .store import jobs as store
from .store import limits as limits_store
from .store import retry as retrystore
from .store import transitions
from .store import usage as usagestore
from .store import workflows as wfstore
from .store.effects import Effects
from .store.transitions import AckResult
from .usage import Pricing, PricingCallable, WorkflowUsage
from .worker import GLOBAL_REGISTRY, FunctionWorker, Worker, WorkerDef, WorkerOptions, import_worker
from .workflows.builder import Workflow
from .workflows.status import WorkflowStatus

log = logging.getLogger("baton")

USAGE = telemetry.events.JOB_USAGE

F = TypeVar("F", bound=Callable[..., Any])
Callback = Callable[[dict[str, Any]], Any]


def _queue_options(queues: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    if queues is not None and not isinstance(queues, Mapping):
        raise ValidationError(
            "queues", f"must be a dict of queue name to concurrency, e.g. {{'default': 10}}, got {queues!r:.80}"
        )
    out: dict[str, dict[str, Any]] = {}
    for name, value in (queues or {}).items():
        if not isinstance(name, str) or not name.strip() or len(name) > 128:
            raise ValidationError("queues", f"queue names must be non-empty strings, got {name!r:.80}")
        if (problem := storable_text_error(name)) is not None:
            raise ValidationError("queues", f"the queue name {name!r} {problem}")
        limits: QueueLimits | None = None
        if isinstance(value, Mapping):
            limit, paused = value.get("limit", 10), value.get("paused", False)
            unknown = set(value) - {"limit", "paused", "global_limit", "rate_limit"}
            if unknown:
                raise ValidationError(
                    f"queues.{name}",
                    f"unknown option(s) {sorted(unknown, key=repr)}; use limit, paused, global_limit and rate_limit",
                )
            if not isinstance(paused, bool):
                raise ValidationError(f"queues.{name}", f"paused must be True or False, got {paused!r:.80}")
            g, r = value.get("global_limit"), value.get("rate_limit")
            if g is not None or r is not None:
                limits = QueueLimits(
                    None if g is None else parse_global_limit(f"queues.{name}.global_limit", g),
                    None if r is None else parse_rate_limit(f"queues.{name}.rate_limit", r),
                )
        else:
            limit, paused = value, False
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_INT4:
            raise ValidationError(
                f"queues.{name}", f"concurrency limit must be an integer from 1 to {MAX_INT4}, got {limit!r:.80}"
            )
        out[name] = {"limit": limit, "paused": paused}
        if limits is not None:
            out[name]["limits"] = limits
    return out


def _explicit(given: Any, parsed: dict[str, Any]) -> dict[str, Any]:
    """The parsed limit, saying "partition": None when the caller removed the partition."""
    if isinstance(given, Mapping) and "partition" in given and given["partition"] is None:
        parsed["partition"] = None
    return parsed


def _limit_dicts(limits: QueueLimits) -> dict[str, Any]:
    meta = limits.meta()
    return {"global_limit": meta["global_limit"], "rate_limit": meta["rate_limit"]}


def _seconds(field: str, value: Any, minimum: float = 0.0) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not minimum < value <= MAX_DELAY:
        raise ValidationError(
            field, f"must be a number of seconds > {minimum:g} and at most {MAX_DELAY:.0f}, got {value!r:.80}"
        )
    return float(value)


def _job_id(field: str, value: Any) -> int:
    """A job id as the database holds it (a bigint >= 1); a Job stands for its id."""
    if isinstance(value, Job):
        return value.id
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_BIGINT:
        raise ValidationError(field, f"must be a job id (an integer from 1 to 2**63 - 1), got {value!r:.80}")
    return int(value)


def _job_ids(field: str, value: Any) -> list[int]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise ValidationError(field, f"must be a list of job ids, e.g. [1, 2], got {value!r:.80}")
    return [_job_id(field, v) for v in value]


def _limit(field: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_BIGINT:
        raise ValidationError(field, f"must be an integer >= 1 (the most rows to return), got {value!r:.80}")
    return value


def _text_or_none(field: str, value: Any, what: str) -> str | None:
    return None if value is None else check_text(field, value, what=what)


def _states(states: Any) -> list[str] | None:
    if states is None:
        return None
    if isinstance(states, str | bytes | Mapping) or not isinstance(states, Iterable):
        raise ValidationError(
            "states", f"must be a list of states, e.g. ['available', 'scheduled'], got {states!r:.80}"
        )
    out = list(states)
    bad = [s for s in out if not isinstance(s, str) or s not in STATES]
    if bad:
        raise ValidationError("states", f"unknown state(s) {bad!r:.200}; choose from {list(STATES)}")
    return out


def _job_filters(
    ids: Any = None, queue: Any = None, worker: Any = None, states: Any = None, workflow_id: Any = None
) -> dict[str, Any]:
    """The filters of list_jobs / cancel_all_jobs, validated and normalised."""
    return {
        "ids": None if ids is None else _job_ids("ids", ids),
        "queue": _text_or_none("queue", queue, "a queue name"),
        "worker": _text_or_none("worker", worker, "a worker name"),
        "states": _states(states),
        "workflow_id": _text_or_none("workflow_id", workflow_id, "a workflow id string"),
    }


def _in_batch(exc: ValidationError, index: int, label: str | None) -> ValidationError:
    """`exc`, raised validating one workflow of `insert_workflows`, again naming that workflow
    by its index and label: `workflows[3] (label 'etl') step 'b': depends on unknown step ...`."""
    where = f"workflows[{index}]" + ("" if label is None else f" (label {label!r:.80})")
    message = str(exc).removeprefix(f"{exc.field}: ")
    if isinstance(exc, WorkflowError):
        field = exc.field if exc.step is None else exc.field.removesuffix(f" step {exc.step!r}")
        field = where if field == "workflow" else f"{where} {field}"
        return WorkflowError(message, step=exc.step, field=field, path=exc.path)
    return ValidationError(f"{where} {exc.field}", message)


def unique_held_error(held: store.UniqueHeld | store.StepBlocked) -> ValidationError:
    """The error for a refused retry: another live job holds the job's unique key (naming
    `unique`), or a dependency of the workflow step failed (naming `job_id`)."""
    if isinstance(held, store.StepBlocked):
        return ValidationError("job_id", held.message())
    return ValidationError(
        "unique",
        f"job {held.id} was not retried: job {held.holder} ({held.holder_state}) has the same unique key, and "
        f"a unique worker runs at most one job per key; retry job {held.id} once job {held.holder} has "
        f"finished, or cancel job {held.holder} first",
    )


def default_plugins() -> list[Plugin]:
    """The plugins a node runs when none are given: staging and the self-healing layer."""
    from .plugins.lifeline import Lifeline
    from .plugins.workflow_health import WorkflowHealth

    return [Stager(), Lifeline(), WorkflowHealth()]


class Baton:
    """A Baton application: where jobs live, which queues this node runs, and its plugins.

    `Baton()` with no URL uses $BATON_DATABASE_URL, else an SQLite file `./baton.db`.
    Inserting needs no started node; `async with app:` (or `await app.start()`) runs the
    producers and plugins until the block exits.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        queues: Mapping[str, int | Mapping[str, Any]] | None = None,
        plugins: Sequence[Plugin] | None = None,
        node: str | None = None,
        refresh_interval: float = 15.0,
        stale_after: float = 60.0,
        shutdown_grace: float = 15.0,
        poll_interval: float = 1.0,
        schema: str = "public",
        pool_size: int | None = None,
        log_events: bool = True,
        lease_guard: bool = True,
        process_pool_size: int | None = None,
        pricing: Mapping[str, Mapping[str, Any]] | PricingCallable | None = None,
    ) -> None:
        self.url = check_text("url", resolve_url(url), what="a database URL")
        self.queues = _queue_options(queues)
        self.refresh_interval = _seconds("refresh_interval", refresh_interval)
        self.stale_after = _seconds("stale_after", stale_after)
        if self.stale_after <= self.refresh_interval:
            raise ValidationError(
                "stale_after",
                f"must be longer than refresh_interval ({self.refresh_interval:g}s), or live nodes look dead; "
                f"got {stale_after!r}",
            )
        self.shutdown_grace = _seconds("shutdown_grace", shutdown_grace, minimum=-1e-9)
        self.poll_interval = _seconds("poll_interval", poll_interval)
        if not isinstance(lease_guard, bool):
            raise ValidationError("lease_guard", f"must be True or False, got {lease_guard!r:.80}")
        self.lease_guard = lease_guard
        self.pricing = Pricing.parse(pricing)
        if node is not None and (not isinstance(node, str) or not node.strip()):
            raise ValidationError("node", f"must be a non-empty name, got {node!r:.80}")
        self.node = check_text("node", node) if node is not None else f"{socket.gethostname()}-{os.getpid()}"
        self.instance = str(uuidlib.uuid4())
        if process_pool_size is None:
            process_pool_size = os.cpu_count() or 1
        if not isinstance(process_pool_size, int) or isinstance(process_pool_size, bool) or process_pool_size < 1:
            raise ValidationError(
                "process_pool_size",
                f"must be an integer >= 1 (worker processes for executor='process' workers) or None (one per CPU), "
                f"got {process_pool_size!r:.80}",
            )
        self.process_pool_size = process_pool_size
        if pool_size is None:
            pool_size = max(4, len(self.queues) + 4)
        if not isinstance(pool_size, int) or isinstance(pool_size, bool):
            raise ValidationError("pool_size", f"must be an integer (connections) or None, got {pool_size!r:.80}")
        if not isinstance(schema, str):
            raise ValidationError("schema", f"must be a plain identifier like 'baton' or 'public', got {schema!r:.80}")
        self.engine = create_engine(self.url, schema=schema, pool_size=pool_size)
        if plugins is None:
            self.plugins = default_plugins()
        elif isinstance(plugins, str | bytes | Mapping) or not isinstance(plugins, Iterable):
            raise ValidationError(
                "plugins", f"must be a list of baton.plugins.* instances (or None), got {plugins!r:.80}"
            )
        else:
            for p in plugins:
                if not isinstance(p, Plugin):
                    raise ValidationError("plugins", f"expected baton.plugins.* instances, got {p!r}")
            self.plugins = list(plugins)
            if not any(isinstance(p, Stager) for p in self.plugins):
                self.plugins.insert(0, Stager())
        names = [p.name for p in self.plugins]
        if len(set(names)) != len(names):
            raise ValidationError("plugins", f"each plugin may be given once, got {names}")
        self._workers: dict[str, WorkerDef] = {}
        self._resolved: dict[str, WorkerDef] = {}
        self._finished_subscribers: list[Callback] = []
        self._lease_subscribers: list[Callback] = []
        self._step_subscribers: dict[str | None, list[Callback]] = {}
        self._node: Node | None = None
        self._stopping: Node | None = None
        self._stopped = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_threads: DaemonThreadPool | None = None
        self._background: set[asyncio.Future[Any]] = set()
        if log_events:
            from .telemetry.logging import attach_default_logger

            attach_default_logger()

    def __repr__(self) -> str:
        return f"<Baton node={self.node} db={self.engine.display_url} queues={list(self.queues)}>"

    # -- workers ----------------------------------------------------------------------

    @overload
    def worker(self, fn: F) -> FunctionWorker: ...

    @overload
    def worker(self, fn: None = None, **options: Any) -> Callable[[F], FunctionWorker]: ...

    def worker(self, fn: Any = None, **options: Any) -> Any:
        """Declare a worker: `@app.worker(queue=..., max_attempts=..., ...)` on a sync or async
        function taking the job (or on a `baton.Worker` subclass to register it here).

        Options: name, queue, max_attempts, priority, tags, timeout, unique, chain_by,
        on_discarded, on_cancelled, record, executor ("thread", or "process" for CPU-bound
        sync functions, see docs/executors.md), backoff (callable job -> seconds),
        after_cancelled (callable reason, job)."""

        def decorate(target: Any) -> Any:
            if isinstance(target, type) and issubclass(target, Worker):
                if options:
                    raise ValidationError("worker", "set options of a Worker class as class attributes")
                self.register(target)
                return target
            if not callable(target):
                raise ValidationError("worker", f"@app.worker decorates a function or Worker class, got {target!r}")
            opts = dict(options)
            backoff = opts.pop("backoff", None)
            after_cancelled = opts.pop("after_cancelled", None)
            name = opts.pop("name", None) or f"{target.__module__}.{target.__qualname__}"
            if backoff is not None and not callable(backoff):
                raise ValidationError("backoff", "must be a callable taking the job and returning seconds")
            try:
                worker_options = WorkerOptions(name, **opts)
            except TypeError as exc:
                raise ValidationError("worker", f"{exc}") from None
            handle = FunctionWorker(target, worker_options, backoff, after_cancelled)
            self._workers[name] = handle.definition
            self._resolved.pop(name, None)
            return handle

        if fn is not None:
            return decorate(fn)
        return decorate

    def register(self, *workers: type[Worker] | FunctionWorker) -> None:
        """Make workers known to this app by name (Worker subclasses register globally already)."""
        for w in workers:
            if isinstance(w, FunctionWorker):
                self._workers[w.name] = w.definition
            elif isinstance(w, type) and issubclass(w, Worker):
                self._workers[w.name] = GLOBAL_REGISTRY.get(w.name) or WorkerDef.from_class(w)
            else:
                raise ValidationError(
                    "worker", f"cannot register {w!r}: pass a Worker subclass or an @app.worker function"
                )
            self._resolved.pop(w.name, None)

    def resolve_worker(self, name: str) -> WorkerDef | None:
        """The definition of worker `name`: registered here, a Worker subclass, or an import path."""
        found = self._workers.get(name) or self._resolved.get(name) or GLOBAL_REGISTRY.get(name)
        if found is None:
            found = import_worker(name)
            if found is not None:
                self._resolved[name] = found
        return found

    def new(self, worker: str, args: Mapping[str, Any] | None = None, **options: Any) -> JobSpec:
        """Build a job for a worker known by name (`app.new("app.tasks.send", {...})`)."""
        if not isinstance(worker, str):
            raise ValidationError("worker", f"must be a worker name or import path, got {worker!r:.80}")
        definition = self.resolve_worker(worker)
        if definition is None:
            raise ValidationError(
                "worker", f"unknown worker {worker!r}: register it with @app.worker or give an importable path"
            )
        return definition.options.new(args, **options)

    def _check_specs(self, jobs: Iterable[JobSpec]) -> list[JobSpec]:
        if isinstance(jobs, JobSpec):
            raise ValidationError("jobs", "insert_all takes a list of jobs; use insert() for one")
        if isinstance(jobs, str | bytes | Mapping) or not isinstance(jobs, Iterable):
            raise ValidationError("jobs", f"must be a list of jobs built with worker.new(args), got {jobs!r:.80}")
        specs = list(jobs)
        for i, spec in enumerate(specs):
            if not isinstance(spec, JobSpec):
                raise ValidationError(
                    f"jobs[{i}]", f"expected a job built with worker.new(args), got {type(spec).__name__}"
                )
            if self.resolve_worker(spec.worker) is None:
                raise ValidationError(
                    "worker",
                    f"unknown worker {spec.worker!r}: register it with @app.worker, define a baton.Worker "
                    "subclass, or give an importable path",
                )
        return specs

    # -- lifecycle --------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Create or upgrade Baton's tables (idempotent, safe from several processes at once)."""
        return await self.engine.migrate()

    async def start(self) -> None:
        """Start this node: check the schema, then run producers, heartbeat and plugins."""
        if self._node is not None:
            raise BatonError("this Baton app is already started")
        await self.engine.open_checked()
        for plugin in self.plugins:
            plugin.validate(self)
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        node = Node(self)
        self._node = node
        try:
            await node.start()
        except BaseException:
            self._node = None
            raise

    async def stop(self, grace: float | None = None) -> None:
        """Stop gracefully (SPEC section 2): stop fetching, wait up to `grace` seconds
        (default `shutdown_grace`) for running jobs, hand the rest back, release connections.

        Calling it again while a stop is waiting (a second Ctrl-C) cuts the wait short."""
        if self._stopping is not None:
            self._stopping.hurry()
            await self._stopped.wait()
            return
        node, self._node = self._node, None
        if node is not None:
            self._stopping = node
            try:
                await node.stop(grace)
            finally:
                self._stopping = None
                self._stopped.set()
        await self.close()

    async def close(self) -> None:
        """Release connections (for apps that only insert and never start)."""
        if self._drain_threads is not None:
            self._drain_threads.shutdown(wait=False)
            self._drain_threads = None
        await self.engine.close()

    def close_sync(self) -> None:
        """`close` from synchronous code (no event loop needed): release connections, for
        apps that only insert and never start, like `close`; they reopen on next use."""
        if self._drain_threads is not None:
            self._drain_threads.shutdown(wait=False)
            self._drain_threads = None
        self.engine.close_sync()

    async def __aenter__(self) -> Baton:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        """Whether this app has a started node."""
        return self._node is not None

    @property
    def is_leader(self) -> bool:
        """Whether this node currently holds the leader lease."""
        return self._node is not None and self._node.leadership.is_leader

    # -- insert -----------------------------------------------------------------------

    async def insert(self, job: JobSpec, *, conn: Any = None) -> Job:
        """Insert one job (inside the caller's transaction when `conn` is given)."""
        return (await self.insert_all([job], conn=conn))[0]

    async def insert_all(self, jobs: Iterable[JobSpec], *, conn: Any = None) -> list[Job]:
        """Insert many jobs, one round trip per 5 000; returns them in order (unique
        conflicts come back as the existing job with `conflict=True`)."""
        specs = self._check_specs(jobs)
        if conn is not None:
            inserted = await self.engine.run_on(conn, store.insert_jobs, specs)
        elif store.single_statement(specs):
            inserted = await self.engine.run_statement(store.insert_jobs, specs)
        else:
            inserted = await self.engine.run(store.insert_jobs, specs)
        self.wake_producers({j.queue for j in inserted if j.state == "available" and not j.conflict})
        return inserted

    def insert_sync(self, job: JobSpec, *, conn: Any = None) -> Job:
        """`insert` from synchronous code (a web view, a script): no event loop needed."""
        return self.insert_all_sync([job], conn=conn)[0]

    def insert_all_sync(self, jobs: Iterable[JobSpec], *, conn: Any = None) -> list[Job]:
        """`insert_all` from synchronous code."""
        specs = self._check_specs(jobs)
        if conn is not None:
            inserted = self.engine.run_on_sync(conn, store.insert_jobs, specs)
        else:
            inserted = self.engine.run_sync(store.insert_jobs, specs)
        self.wake_producers({j.queue for j in inserted if j.state == "available" and not j.conflict})
        return inserted

    # -- workflows --------------------------------------------------------------------

    def _plan(self, wf: Workflow, existing: Iterable[str] = ()) -> list[Any]:
        if not isinstance(wf, Workflow):
            raise ValidationError("workflow", f"expected a baton.Workflow, got {type(wf).__name__}")
        plan = wf.plan(existing)
        self._check_specs([step.job for step in plan])
        return plan

    async def insert_workflow(self, wf: Workflow, *, conn: Any = None) -> str:
        """Validate and insert every step of `wf` in one transaction; returns the workflow id."""
        plan = self._plan(wf)
        if conn is not None:
            wid = await self.engine.run_on(
                conn, wfstore.insert_workflow, wf.label, plan, self.instance, wf.context_json
            )
        else:
            wid = await self.engine.run(wfstore.insert_workflow, wf.label, plan, self.instance, wf.context_json)
        self.wake_producers({s.job.queue for s in plan if not s.edges})
        return wid

    def insert_workflow_sync(self, wf: Workflow, *, conn: Any = None) -> str:
        """`insert_workflow` from synchronous code."""
        plan = self._plan(wf)
        if conn is not None:
            wid = self.engine.run_on_sync(conn, wfstore.insert_workflow, wf.label, plan, self.instance, wf.context_json)
        else:
            wid = self.engine.run_sync(wfstore.insert_workflow, wf.label, plan, self.instance, wf.context_json)
        self.wake_producers({s.job.queue for s in plan if not s.edges})
        return wid

    def _plan_all(self, wfs: Iterable[Workflow]) -> list[wfstore.Planned]:
        """Plan every workflow of a bulk insert before anything is written; an invalid one
        raises the error `insert_workflow` would, naming its index and label."""
        if isinstance(wfs, Workflow):
            raise ValidationError(
                "workflows", "insert_workflows takes a list of workflows; use insert_workflow() for one"
            )
        if isinstance(wfs, str | bytes | Mapping) or not isinstance(wfs, Iterable):
            raise ValidationError("workflows", f"must be a list of baton.Workflow, got {wfs!r:.80}")
        planned: list[wfstore.Planned] = []
        known: set[str] = set()  # worker names already resolved in this call
        for i, wf in enumerate(wfs):
            if not isinstance(wf, Workflow):
                raise ValidationError(f"workflows[{i}]", f"expected a baton.Workflow, got {type(wf).__name__}")
            try:
                plan = wf.plan()
                for step in plan:
                    if step.job.worker not in known:
                        self._check_specs([step.job])
                        known.add(step.job.worker)
            except ValidationError as exc:
                raise _in_batch(exc, i, wf.label) from None
            planned.append((wf.label, plan, wf.context_json))
        return planned

    async def insert_workflows(self, wfs: Iterable[Workflow], *, conn: Any = None) -> list[str]:
        """Validate every workflow of `wfs`, then insert them all in one transaction (one
        round trip per 5 000 rows of each table, not per workflow); returns their ids in
        order. Nothing is written if any workflow is invalid: the `WorkflowError` (or
        `ValidationError`) names its index and label, e.g. `workflows[3] (label 'etl') step 'b'`."""
        planned = self._plan_all(wfs)
        if not planned:
            return []
        if conn is not None:
            wids = await self.engine.run_on(conn, wfstore.insert_workflows, planned)
        else:
            wids = await self.engine.run(wfstore.insert_workflows, planned)
        # A generator: read only with a node running here (20 000 steps take milliseconds).
        self.wake_producers(s.job.queue for _, plan, _ in planned for s in plan if not s.edges)
        return wids

    def insert_workflows_sync(self, wfs: Iterable[Workflow], *, conn: Any = None) -> list[str]:
        """`insert_workflows` from synchronous code."""
        planned = self._plan_all(wfs)
        if not planned:
            return []
        if conn is not None:
            wids = self.engine.run_on_sync(conn, wfstore.insert_workflows, planned)
        else:
            wids = self.engine.run_sync(wfstore.insert_workflows, planned)
        # A generator: read only with a node running here (20 000 steps take milliseconds).
        self.wake_producers(s.job.queue for _, plan, _ in planned for s in plan if not s.edges)
        return wids

    async def append_workflow(self, workflow_id: str, wf: Workflow) -> list[str]:
        """Add the steps of `wf` to a running workflow (deps may name its existing steps).
        They read the workflow's context; `wf` cannot bring its own. Returns the new step names."""
        if not isinstance(workflow_id, str) or not workflow_id:
            raise ValidationError("workflow_id", f"must be a workflow id string, got {workflow_id!r}")
        check_text("workflow_id", workflow_id)
        if not isinstance(wf, Workflow):
            raise ValidationError("workflow", f"expected a baton.Workflow, got {type(wf).__name__}")
        if wf.context is not None:  # as Graft refuses it: it would be silently ignored
            raise WorkflowError(
                "appended steps share the context of the workflow they join (given when it was inserted); "
                "drop context= from the appended workflow",
                field="context",
            )
        outside = [d for step in wf.steps.values() for d in step.deps if d not in wf.steps]
        self._plan(wf, existing=outside)  # validate before touching the database
        names, effects = await self.engine.run(
            wfstore.append_workflow, workflow_id, lambda existing: self._plan(wf, existing), self.node, self.instance
        )
        await self.publish_effects(effects)
        self.wake_producers({j.queue for j in await self.list_jobs(workflow_id=workflow_id, states=["available"])})
        return names

    async def workflow_status(self, workflow_id: str) -> WorkflowStatus:
        """Label, state of every step, counts by state, whether it finished, and why steps wait."""
        check_text("workflow_id", workflow_id, what="a workflow id string")
        wf, steps = await self.engine.run(wfstore.status_rows, workflow_id)
        if wf is None:
            raise ValidationError("workflow_id", f"no workflow with id {workflow_id!r}")
        return WorkflowStatus.from_rows(wf, steps)

    async def list_workflows(self, limit: int = 50, label: str | None = None) -> list[dict[str, Any]]:
        """Recent workflows, newest first, with step and resolved counts."""
        limit = _limit("limit", limit)
        label = _text_or_none("label", label, "a workflow label")
        return await self.engine.run(wfstore.list_workflows, limit, label)

    # -- usage and cost ---------------------------------------------------------------

    async def workflow_usage(self, workflow_id: str) -> WorkflowUsage:
        """Tokens and cost a workflow's steps recorded (`job.record_usage`), in total, by step
        (and within a step by model and attempt) and by model. Costs are Decimal; a total
        leaves unpriced calls out and names their models in `unpriced_models`."""
        check_text("workflow_id", workflow_id, what="a workflow id string")
        usage = await self.engine.run(usagestore.workflow_usage, workflow_id)
        if usage is None:
            raise ValidationError("workflow_id", f"no workflow with id {workflow_id!r}")
        return usage

    async def usage_by_model(self, since: datetime | timedelta | None = None) -> dict[str, dict[str, Any]]:
        """Usage of every job recorded since `since` (an aware datetime, or a timedelta back
        from now; None: all kept), by model: `{model: {"cost": Decimal | None, "input_tokens": n,
        "output_tokens": n, "calls": n, "unpriced_calls": n}}`."""
        if isinstance(since, timedelta):
            since = datetime.now(UTC) - since
        elif since is not None and (not isinstance(since, datetime) or since.utcoffset() is None):
            raise ValidationError("since", f"must be a timezone-aware datetime, a timedelta or None, got {since!r:.80}")
        totals = await self.engine.run(usagestore.usage_by_model, since)
        return {model: t.as_dict() for model, t in totals.items()}

    # -- jobs: read, cancel, retry ----------------------------------------------------

    async def get_job(self, job_id: int) -> Job | None:
        """The job with this id, or None."""
        return await self.engine.run(store.get_job, _job_id("job_id", job_id))

    async def list_jobs(
        self,
        *,
        ids: Sequence[int] | None = None,
        queue: str | None = None,
        worker: str | None = None,
        states: Sequence[str] | None = None,
        workflow_id: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs matching every given filter, newest first."""
        filters = _job_filters(ids, queue, worker, states, workflow_id)
        return await self.engine.run(store.list_jobs, **filters, limit=_limit("limit", limit))

    async def count_jobs(self, queue: str | None = None) -> dict[str, int]:
        """Number of jobs by state."""
        return await self.engine.run(store.count_jobs, _text_or_none("queue", queue, "a queue name"))

    async def cancel_all_jobs(
        self,
        *,
        ids: Sequence[int] | None = None,
        queue: str | None = None,
        worker: str | None = None,
        states: Sequence[str] | None = None,
        workflow_id: str | None = None,
        reason: str = "cancelled",
        repair: str | None = None,
    ) -> int:
        """Cancel every non-terminal job matching the filters (at least one is required);
        executing ones are stopped on their node. `reason` is recorded in each job's errors;
        `repair` (a reason code such as "orphaned_step") also goes to `meta.repair`.
        Returns how many were cancelled."""
        if ids is None and queue is None and worker is None and states is None and workflow_id is None:
            raise ValidationError("ids", "give at least one filter (ids=, queue=, worker=, states=, workflow_id=)")
        filters = _job_filters(ids, queue, worker, states, workflow_id)
        reason = check_text("reason", reason)
        repair = _text_or_none("repair", repair, "a reason code such as 'orphaned_step'")
        jobs, effects = await self.engine.run(
            transitions.cancel_jobs, self.node, self.instance, **filters, reason=reason, repair=repair
        )
        await self.publish_effects(effects)
        return len(jobs)

    def cancel_all_jobs_sync(self, **filters: Any) -> int:
        """`cancel_all_jobs` from synchronous code."""
        unknown = set(filters) - {"ids", "queue", "worker", "states", "workflow_id", "reason", "repair"}
        if unknown:
            raise ValidationError(
                sorted(unknown)[0], "unknown filter; use ids=, queue=, worker=, states=, workflow_id=, reason=, repair="
            )
        given = {k: filters.get(k) for k in ("ids", "queue", "worker", "states", "workflow_id")}
        if all(v is None for v in given.values()):
            raise ValidationError("ids", "give at least one filter (ids=, queue=, worker=, states=, workflow_id=)")
        checked = _job_filters(**given)
        reason = check_text("reason", filters.get("reason", "cancelled"))
        repair = _text_or_none("repair", filters.get("repair"), "a reason code such as 'orphaned_step'")
        jobs, effects = self.engine.run_sync(
            transitions.cancel_jobs, self.node, self.instance, **checked, reason=reason, repair=repair
        )
        self.publish_effects_sync(effects)
        return len(jobs)

    async def cancel_job(self, job_id: int) -> Job | None:
        """Cancel one job; returns it as cancelled, or None if it was missing or already terminal."""
        job_id = _job_id("job_id", job_id)
        if await self.cancel_all_jobs(ids=[job_id]) == 0:
            return None
        return await self.get_job(job_id)

    async def discard_all_jobs(self, ids: Sequence[int], *, reason: str = "discarded by hand") -> int:
        """Discard jobs waiting to run (available, scheduled, retryable, suspended; a running job
        is cancelled instead), recording `reason` in their errors. Workflow dependents and chain
        links follow as for any discarded job. Returns how many were discarded."""
        checked = _job_ids("ids", ids)
        reason = check_text("reason", reason)
        jobs, effects = await self.engine.run(transitions.discard_jobs, self.node, self.instance, checked, reason)
        await self.publish_effects(effects)
        return len(jobs)

    async def retry_job(self, job_id: int) -> Job | None:
        """Move a terminal or retryable job back to `available`; None if it cannot be retried
        (missing, or waiting or running already). A finished unique job whose key another
        waiting or running job holds is not retried: that raises a ValidationError naming
        `unique` and the holder (unique jobs run at most one per key).

        A finished workflow step whose dependencies have not all completed yet goes back to
        `suspended` instead, released when they complete; one with a dependency that ended
        cancelled, discarded or deleted (and not ignored) is not retried: a ValidationError
        naming `job_id` says which dependency to retry first. A step of a finished workflow
        reopens it: `workflow_status` reports it running again, but its finished event is not
        sent a second time."""
        jobs, held = await self.engine.run(retrystore.retry_jobs, [_job_id("job_id", job_id)])
        self.wake_producers({j.queue for j in jobs})
        if held:
            raise unique_held_error(held[0])
        return jobs[0] if jobs else None

    async def retry_all_jobs(self, ids: Sequence[int]) -> int:
        """`retry_job` for many ids; returns how many were moved back to available (or, for
        workflow steps waiting for their dependencies, suspended). Finished unique jobs whose
        key another waiting or running job holds (or another job of the same call retried),
        and workflow steps `retry_job` refuses, are left as they are, and not counted. Steps
        retried with their failed dependency in one call wait for it."""
        jobs, _held = await self.engine.run(retrystore.retry_jobs, _job_ids("ids", ids))
        self.wake_producers({j.queue for j in jobs})
        return len(jobs)

    # -- queues -----------------------------------------------------------------------

    async def pause_queue(self, queue: str, *, node: str | None = None, local: bool = False) -> None:
        """Stop fetching `queue` (running jobs finish) on this node (`local=True`), on one named
        node, or on every node."""
        await self._queue_signal({"action": "pause", "queue": queue, "node": node}, local)

    async def resume_queue(self, queue: str, *, node: str | None = None, local: bool = False) -> None:
        """Resume fetching a paused queue."""
        await self._queue_signal({"action": "resume", "queue": queue, "node": node}, local)

    async def scale_queue(
        self,
        queue: str,
        limit: int | None = None,
        *,
        global_limit: int | Mapping[str, Any] | None = None,
        rate_limit: Mapping[str, Any] | None = None,
        node: str | None = None,
        local: bool = False,
    ) -> None:
        """Change a queue's concurrency limit (per node) at run time, and/or its limits across
        nodes (`global_limit`, `rate_limit`, as in `queues=`; every node obeys them, at once when
        the signal arrives and at the latest after one refresh interval). A limit given without
        `partition` keeps the queue's current partition; `"partition": None` removes it."""
        if limit is None and global_limit is None and rate_limit is None:
            raise ValidationError("limit", "give a limit, a global_limit or a rate_limit to change")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_INT4):
            raise ValidationError("limit", f"must be an integer from 1 to {MAX_INT4}, got {limit!r:.80}")
        message: dict[str, Any] = {"action": "scale", "queue": queue, "node": node, "limit": limit}
        if global_limit is not None or rate_limit is not None:
            if node is not None:
                raise ValidationError(
                    "node", "global_limit and rate_limit hold across every node: scale them without node="
                )
            field = f"queues.{queue}" if isinstance(queue, str) else "queue"
            if local and self._node is not None and queue not in self._node.producers:
                raise ValidationError(field, f"this node runs no queue {queue!r}; its queues are {list(self.queues)}")
            # A limit given without "partition" keeps the queue's current partition.
            if global_limit is not None:
                message["global_limit"] = _explicit(
                    global_limit, parse_global_limit(f"{field}.global_limit", global_limit).to_dict()
                )
            if rate_limit is not None:
                message["rate_limit"] = _explicit(
                    rate_limit, parse_rate_limit(f"{field}.rate_limit", rate_limit).to_dict()
                )
            message["limits_set_at"] = time.time()
        await self._queue_signal(message, local)

    async def _queue_signal(self, message: dict[str, Any], local: bool) -> None:
        if not isinstance(message["queue"], str) or not message["queue"]:
            raise ValidationError("queue", f"must be a queue name, got {message['queue']!r:.80}")
        check_text("queue", message["queue"])
        _text_or_none("node", message["node"], "a node name")
        if local:
            if self._node is None:
                raise BatonError("local=True needs a started node (async with app: ...)")
            self._node.on_signal({**message, "node": None})
            return
        if self._node is not None:
            self._node.on_signal(message)
        await self.engine.run(_notify, "signal", [dumps(message)])

    def queue_state(self) -> dict[str, dict[str, Any]]:
        """This node's queues: limit, paused, running, and the limits across nodes the queue
        obeys (`global_limit`, `rate_limit`: dicts as in `queues=`, or None)."""
        if self._node is None:
            state: dict[str, dict[str, Any]] = {}
            for q, o in self.queues.items():
                limits = o.get("limits") or QueueLimits()
                state[q] = {"limit": o["limit"], "paused": o["paused"], "running": 0, **_limit_dicts(limits)}
            return state
        return {
            q: {"limit": p.limit, "paused": p.paused, "running": len(p.running), **_limit_dicts(p.limits)}
            for q, p in self._node.producers.items()
        }

    async def queue_usage(self) -> dict[str, dict[str, Any]]:
        """Every queue a live node runs, from the database: its nodes (`nodes`: name -> limit,
        paused, running), the limits across nodes it obeys (`global_limit`, `rate_limit`) and
        their current usage: `executing` (on every node) and `window` (starts in the current
        rate window), each also per partition (`executing_by_partition`, `window_by_partition`,
        busiest first, keys are JSON arrays of the partition's values)."""
        rows = await self.engine.run(store.list_producers)
        by_queue: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            meta = row["meta"]
            meta = json.loads(meta) if isinstance(meta, str) else dict(meta or {})
            if meta.get("drain"):
                continue
            by_queue.setdefault(row["queue"], []).append({**row, "meta": meta})
        out: dict[str, dict[str, Any]] = {}
        for queue in sorted(by_queue):
            producers = by_queue[queue]
            limits = effective(producers)
            usage = await self.engine.run(limits_store.queue_usage, queue, limits)
            out[queue] = {
                "nodes": {p["node"]: {k: p["meta"].get(k) for k in ("limit", "paused", "running")} for p in producers},
                **_limit_dicts(limits),
                **usage,
            }
        return out

    # -- draining (tests, scripts) ----------------------------------------------------

    async def drain(self, queue: str | None = None, *, batch: int = 100) -> dict[str, int]:
        """Run jobs inline until no available or due job is left (in `queue`, or any queue).
        Returns how many attempts ended in each state. The drain holds a producer row of its
        own, renewed every `refresh_interval` while it runs, so a node's Lifeline never takes
        a drained job that outlasts `stale_after` for an orphan."""
        queue = _text_or_none("queue", queue, "a queue name")
        batch = _limit("batch", batch)
        await self.engine.open()
        if self._drain_threads is None:
            self._drain_threads = DaemonThreadPool(8, "baton-drain")
        executor = Executor(
            self.resolve_worker,
            self._drain_threads,
            self.node,
            self.pricing,
            process_pool_size=self.process_pool_size,
        )
        uuid = str(uuidlib.uuid4())
        # A producer row of its own, so the lifeline never takes a draining job for an orphan;
        # renewed every refresh_interval while the drain runs (a job may outlast stale_after).
        producer = {
            "uuid": uuid,
            "node": self.node,
            "queue": queue or "*",
            "meta": {"drain": True, "stale_after": self.stale_after},
        }
        counts: dict[str, int] = {}
        heartbeat: asyncio.Task[None] | None = None
        try:
            await self.engine.run(store.upsert_producers, [producer])
            heartbeat = asyncio.create_task(self._drain_heartbeat(producer), name="baton-drain-heartbeat")
            while True:
                await self.engine.run(store.stage_jobs, 10_000)
                queues = [queue] if queue is not None else await self.engine.run(_available_queues)
                ran = 0
                for q in queues:
                    jobs = await self.engine.run(transitions.fetch_jobs, q, self.node, uuid, batch)
                    if not jobs:
                        continue
                    acks = [ack for job in jobs if (ack := await executor.run(job)) is not None]
                    result = await self.engine.run(transitions.ack_jobs, acks, self.node, self.instance)
                    await self.after_ack(result)
                    for ack in result.acked:
                        counts[ack.state] = counts.get(ack.state, 0) + 1
                    ran += len(jobs)
                if ran == 0:
                    return counts
        finally:
            await cancel_and_wait(heartbeat)
            if executor.processes is not None:
                await asyncio.to_thread(executor.close)
            await self.engine.run(store.delete_producers, [uuid])

    async def _drain_heartbeat(self, producer: dict[str, Any]) -> None:
        """Renew a drain's producer row every `refresh_interval` (start to start, sooner after
        a failure) until cancelled, as a node's heartbeat renews its own: a job that runs
        longer than `stale_after` is never taken for an orphan while the drain runs it."""
        interval = self.refresh_interval
        due = time.monotonic() + interval
        failures = 0
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            started = time.monotonic()
            try:
                await self.engine.run_autocommit(store.upsert_producers, [producer])
            except Exception as exc:
                failures += 1
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "drain could not renew its producer row (%s); retrying",
                    exc,
                )
                due = started + min(interval, 1.0)
            else:
                failures = 0
                due = started + interval

    # -- events -----------------------------------------------------------------------

    def on_workflow_finished(self, callback: Callback) -> Callable[[], None]:
        """Call `callback(event)` once for every workflow that finishes, on every node.
        The event is `{workflow_id, label, status, failed_steps, counts}`. Returns an unsubscribe."""
        if not callable(callback):
            raise ValidationError("callback", "must be callable")
        self._finished_subscribers.append(callback)
        return lambda: self._finished_subscribers.remove(callback) if callback in self._finished_subscribers else None

    def on_lease_lost(self, callback: Callback) -> Callable[[], None]:
        """Call `callback(event)` when this node loses its lease (docs/lease.md): it could not
        renew its producer rows for nearly `stale_after`, so it stopped fetching, cancelled its
        running async jobs and flagged its sync ones (`job.cancelled()`). The event is
        `{node, instance, since_renewal, cancelled, flagged}` (job ids). Called on the event
        loop, while the database may be unreachable. Returns an unsubscribe."""
        if not callable(callback):
            raise ValidationError("callback", "must be callable")
        self._lease_subscribers.append(callback)
        return lambda: self._lease_subscribers.remove(callback) if callback in self._lease_subscribers else None

    def subscribe_workflow(self, workflow_id: str | None, callback: Callback) -> Callable[[], None]:
        """Live step events (`{workflow_id, step, job_id, event}`, plus `parent` for a grafted
        step: the graft step that grafted it; event in executing, snoozed,
        completed, retryable, discarded, cancelled) of one workflow, or of all with None.
        Delivered on every started node. Returns an unsubscribe."""
        if workflow_id is not None:
            what = "a workflow id string (or None for every workflow)"
            if not check_text("workflow_id", workflow_id, what=what):
                raise ValidationError("workflow_id", f"must be {what}, got ''")
        if not callable(callback):
            raise ValidationError("callback", f"must be callable, got {type(callback).__name__} {callback!r:.80}")
        subs = self._step_subscribers.setdefault(workflow_id, [])
        subs.append(callback)
        return lambda: subs.remove(callback) if callback in subs else None

    def _call(self, callback: Callback, event: dict[str, Any]) -> None:
        try:
            result = callback(event)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                task.add_done_callback(_log_task_error)
        except Exception:
            log.exception("workflow event callback %r failed", callback)

    # -- the host seam (baton.host): what plugins and the runtime may ask for; not for application code

    def wants_step_events(self) -> bool:
        """Whether a `subscribe_workflow` callback is registered here."""
        return any(self._step_subscribers.values())

    def deliver_workflow_event(self, message: dict[str, Any]) -> None:
        """Deliver a workflow notification (finished or step event) to local subscribers."""
        kind = message.get("type")
        if kind == "finished":
            if message.get("origin") == self.instance:
                return  # delivered locally by the announcing transaction's caller
            if message.get("truncated"):
                task = asyncio.ensure_future(self._deliver_truncated(message["workflow_id"]))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                return
            fields: tuple[str, ...] = ("workflow_id", "label", "status", "failed_steps", "counts")
            event = {k: message[k] for k in fields if k in message}
            for cb in list(self._finished_subscribers):
                self._call(cb, event)
        elif kind == "step":
            step_fields: tuple[str, ...] = ("workflow_id", "step", "job_id", "event")
            event = {k: message.get(k) for k in step_fields}
            if message.get("parent") is not None:  # a grafted step: the graft step that grafted it
                event["parent"] = message["parent"]
            for cb in list(self._step_subscribers.get(message.get("workflow_id"), ())) + list(
                self._step_subscribers.get(None, ())
            ):
                self._call(cb, event)

    def lease_lost(self, event: dict[str, Any]) -> None:
        """Call the `on_lease_lost` hooks."""
        for cb in list(self._lease_subscribers):
            self._call(cb, event)

    async def _deliver_truncated(self, workflow_id: str) -> None:
        for event in await self.engine.run(wfstore.summaries, [workflow_id]):
            for cb in list(self._finished_subscribers):
                self._call(cb, event)

    async def after_ack(self, result: AckResult) -> None:
        """Report fenced acks and publish the effects of an ack transaction."""
        self._report_fenced(result)
        self._report_usage(result)
        await self.publish_effects(result.effects)

    def _report_usage(self, result: AckResult) -> None:
        if telemetry.has_handlers(USAGE):
            self.report_usage((a.job, a.usage) for a in result.acked if a.usage)

    def report_usage(self, attempts: Iterable[tuple[Job, Sequence[UsageRecord]]]) -> None:
        """Emit the usage event of each record just stored for an attempt (after its commit:
        an ack's, or a stopping node's hand-back of an attempt it could not finish)."""
        if not telemetry.has_handlers(USAGE):
            return
        for job, records in attempts:
            for u in records:
                telemetry.emit(
                    USAGE,
                    {
                        "input_tokens": u.input_tokens,
                        "output_tokens": u.output_tokens,
                        "cost": None if u.cost is None else float(u.cost),
                    },
                    {
                        "model": u.model,
                        "cost": u.cost,
                        "extra": u.extra,
                        "job": job,
                        "job_id": job.id,
                        "workflow_id": job.workflow_id,
                        "step": job.step,
                        "attempt": job.attempt,
                        "worker": job.worker,
                        "queue": job.queue,
                        "node": self.node,
                    },
                )

    def _report_fenced(self, result: AckResult) -> None:
        for dropped in result.dropped:
            log.warning(
                "fenced a late ack for job %s attempt %s: the job is now %s (%s); the ack was dropped",
                dropped.job.id,
                dropped.job.attempt,
                dropped.state or "gone",
                dropped.reason,
            )
            telemetry.emit(
                ("baton", "job", "fenced"),
                {"count": 1},
                {
                    "job": dropped.job,
                    "job_id": dropped.job.id,
                    "reason": dropped.reason,
                    "state": dropped.state,
                    "node": self.node,
                },
            )

    async def publish_effects(self, effects: Effects) -> None:
        """Act on what a committed transaction changed: wake queues, stop cancelled jobs,
        start after_cancelled hooks, deliver finished workflows to local subscribers, then
        confirm the claims and emit the finished telemetry events."""
        self._apply(effects)
        if effects.finished:
            ids = [e["workflow_id"] for e in effects.finished]
            try:
                confirmed = await self.engine.run_autocommit(wfstore.confirm_announcements, ids, self.node)
            except Exception as exc:
                log.warning(self._UNCONFIRMED, len(ids), exc)
                return
            self.announce_finished(effects.finished, confirmed)

    def publish_effects_sync(self, effects: Effects) -> None:
        """`publish_effects` for synchronous callers."""
        self._apply(effects)
        if effects.finished:
            ids = [e["workflow_id"] for e in effects.finished]
            try:
                confirmed = self.engine.run_sync(wfstore.confirm_announcements, ids, self.node)
            except Exception as exc:
                log.warning(self._UNCONFIRMED, len(ids), exc)
                return
            self.announce_finished(effects.finished, confirmed)

    _UNCONFIRMED = (
        "could not confirm the announcement of %d finished workflows (%s); the WorkflowHealth "
        "backstop emits their finished events once stale_after has passed"
    )

    def _apply(self, effects: Effects) -> None:
        if effects.released_queues:
            self.wake_producers(effects.released_queues)
        if effects.signal_cancel and self._node is not None:
            self._node.cancel_local(set(effects.signal_cancel))
        for item in effects.cascaded:
            try:
                definition = self.resolve_worker(item.job.worker)
            except Exception as exc:  # its module raises at import: no hook to call
                log.error("no after_cancelled hook for job %s: %s", item.job.id, exc)
                continue
            if definition is not None and definition.after_cancelled is not None:
                self._run_after_cancelled(definition, item.reason, item.job)
        # Other nodes were notified by the commit itself; local subscribers hear it here.
        for event in effects.finished:
            for cb in list(self._finished_subscribers):
                self._call(cb, dict(event))

    def announce_finished(
        self, events: Iterable[dict[str, Any]], confirmed: Mapping[str, float | None] | Iterable[str]
    ) -> None:
        """The ("baton", "workflow", "finished") event of each workflow whose claim this node
        confirmed (exactly one node confirms a claim). A mapping of `confirmed` gives each
        workflow's finished-notification lag in ms (the event's `lag` measurement)."""
        lags: Mapping[str, float | None] = confirmed if isinstance(confirmed, Mapping) else {}
        ours = set(confirmed)
        for event in events:
            wid = event["workflow_id"]
            if wid in ours:
                measurements: dict[str, Any] = {
                    "total_count": sum(event["counts"].values()),
                    "failed_count": len(event["failed_steps"]),
                }
                if lags.get(wid) is not None:
                    measurements["lag"] = lags[wid]
                telemetry.emit(("baton", "workflow", "finished"), measurements, {**event, "node": self.node})

    def _run_after_cancelled(self, definition: WorkerDef, reason: str, job: Job) -> None:
        hook = definition.after_cancelled
        assert hook is not None

        def run() -> None:
            try:
                result = hook(reason, job)
                if inspect.isawaitable(result):
                    asyncio.run(result)  # type: ignore[arg-type]
            except Exception:
                log.exception("after_cancelled of %s (job %s) failed", definition.name, job.id)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            run()  # synchronous caller (cancel_all_jobs_sync): run the hook right here
            return
        if inspect.iscoroutinefunction(hook):

            async def arun() -> None:
                try:
                    await hook(reason, job)
                except Exception:
                    log.exception("after_cancelled of %s (job %s) failed", definition.name, job.id)

            task: asyncio.Future[Any] = loop.create_task(arun())
        else:
            # Like a sync worker, a sync hook runs off the event loop: a slow one must not
            # stop its node from heartbeating and running jobs.
            task = loop.run_in_executor(None, run)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def wake_producers(self, queues: Iterable[str] | Mapping[str, int]) -> None:
        """Wake this node's idle producers of `queues` (callable from any thread)."""
        node, loop = self._node, self._loop
        if node is None or loop is None:
            return
        names = set(queues)
        if not names:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            node.wake(names)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(node.wake, names)


def _log_task_error(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("workflow event callback failed", exc_info=task.exception())


async def _notify(conn: Any, channel: str, payloads: list[str]) -> None:
    await conn.notify(channel, payloads)


async def _available_queues(conn: Any) -> list[str]:
    return [r["queue"] for r in await conn.fetch("available_queues")]
