"""`BatonBackend`: a Django Tasks backend whose tasks are Baton jobs.

A task becomes one job of the worker `run_task` (args: the task's import path, its args and
kwargs). Enqueued inside `transaction.atomic()` on the database Baton lives in, the job is
inserted on Django's own connection, so it commits or rolls back with the caller's data. A
node (`manage.py baton worker`) runs the task function in a worker thread and closes that
thread's Django connections around each task, the way Django does around a request."""

from __future__ import annotations

import builtins
import contextlib
import logging
import threading
import weakref
from collections.abc import Iterator, Mapping
from datetime import UTC
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections, connections
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.signals import connection_created
from django.utils import timezone
from django.utils.module_loading import import_string

from ...app import Baton
from ...job import Job, JobSpec
from ...store import jobs as store
from ...worker import FunctionWorker, WorkerOptions
from ._compat import (
    BaseTaskBackend,
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_backends,
    task_enqueued,
)

WORKER_NAME = "baton.contrib.django.backend.run_task"

log = logging.getLogger("baton.contrib.django")

_STATUS = {
    "available": TaskResultStatus.READY,
    "scheduled": TaskResultStatus.READY,
    "suspended": TaskResultStatus.READY,
    "retryable": TaskResultStatus.READY,
    "executing": TaskResultStatus.RUNNING,
    "completed": TaskResultStatus.SUCCESSFUL,
    "discarded": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}


def _perform(job: Job) -> Any:
    """Run the Django task a job stands for (in a worker thread of the node)."""
    close_old_connections()
    try:
        task = import_string(job.args["task"])
        if not isinstance(task, Task):
            raise TypeError(f"{job.args['task']} is not a Django task (decorate it with @task)")
        args, kwargs = job.args.get("args", []), job.args.get("kwargs", {})
        if task.takes_context:
            backend = task_backends[job.args.get("backend", task.backend)]
            result = backend.result_of(job) if isinstance(backend, BatonBackend) else None
            return task.call(TaskContext(task_result=result), *args, **kwargs)
        return task.call(*args, **kwargs)
    finally:
        # Like the end of a request: drop this thread's connections that are past CONN_MAX_AGE
        # (at once with the default 0) or broken, so worker threads never leak connections.
        close_old_connections()


run_task = FunctionWorker(_perform, WorkerOptions(WORKER_NAME, record=True))
"""The Baton worker that runs Django tasks."""


def _django_url(alias: str) -> str:
    """A Baton URL for Django database `alias` (PostgreSQL or SQLite)."""
    try:
        db = settings.DATABASES[alias]
    except KeyError:
        raise ImproperlyConfigured(f"Baton: DATABASES has no {alias!r} database (OPTIONS['DATABASE'])") from None
    engine = str(db.get("ENGINE", ""))
    if engine.endswith("sqlite3"):
        name = str(db.get("NAME", ""))
        if not name or name == ":memory:" or name.startswith("file:"):
            raise ImproperlyConfigured(
                f"Baton: the SQLite database {alias!r} must be a file path (got {name!r}) so worker processes share it"
            )
        return f"sqlite:///{name}"
    if engine.endswith(("postgresql", "postgis")):
        user = quote(str(db.get("USER") or ""), safe="")
        password = quote(str(db.get("PASSWORD") or ""), safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = str(db.get("HOST") or "")
        port = f":{db['PORT']}" if db.get("PORT") else ""
        # libpq options (sslmode, ...) carry over; Baton's connections keep their own application_name.
        skip = {"pool", "application_name", "server_side_binding", "isolation_level", "assume_role"}
        options = {k: v for k, v in (db.get("OPTIONS") or {}).items() if isinstance(v, str | int) and k not in skip}
        query = f"?{urlencode(options)}" if options else ""
        return f"postgresql://{auth}{host}{port}/{quote(str(db.get('NAME') or ''), safe='')}{query}"
    raise ImproperlyConfigured(
        f"Baton runs on PostgreSQL or SQLite; database {alias!r} uses {engine!r}: set OPTIONS['URL'] to a Baton URL"
    )


def _priority(django_priority: int) -> int:
    """Django's -100 (lowest) .. 100 (highest) onto Baton's 9 (lowest) .. 0 (highest)."""
    return round((100 - django_priority) * 9 / 200)


def _exception_path(error: str) -> str:
    name = error.split(":", 1)[0].strip()
    return f"builtins.{name}" if isinstance(getattr(builtins, name, None), type) else name


class BatonBackend(BaseTaskBackend):
    """Django Tasks backend: `TASKS = {"default": {"BACKEND": "baton.contrib.django.BatonBackend",
    "OPTIONS": {...}}}`.

    OPTIONS: `DATABASE` (the Django database alias Baton lives in, default "default"; enqueues
    inside its atomic blocks join the caller's transaction), `URL` (a Baton URL instead; then
    enqueues use Baton's own connection), `SCHEMA` (PostgreSQL schema, default "public"),
    `QUEUES` (queue -> concurrency of `manage.py baton worker`, default 10 per queue of
    the backend), `MAX_ATTEMPTS` (default 1: a failed task is FAILED, as Django expects;
    more gives Baton's retries with backoff), `BATON` (other `baton.Baton` keyword options)."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options: Mapping[str, Any] = self.options
        self.database = str(options.get("DATABASE", "default"))
        self.url: str | None = options.get("URL")
        self.schema = str(options.get("SCHEMA", "public"))
        self.max_attempts = int(options.get("MAX_ATTEMPTS", 1))
        self.worker_queues: dict[str, int] = dict(options.get("QUEUES") or {q: 10 for q in self.queues or ["default"]})
        self.baton_options: dict[str, Any] = dict(options.get("BATON") or {})
        self._app: Baton | None = None
        self._lock = threading.Lock()
        _BACKENDS.add(self)

    @property
    def same_database(self) -> bool:
        """Whether Baton's tables live in Django's `DATABASE` (enqueues join its transactions)."""
        return self.url is None

    @property
    def app(self) -> Baton:
        """The Baton app of this backend (built on first use)."""
        with self._lock:
            if self._app is None:
                url = self.url or _django_url(self.database)
                options = {"queues": self.worker_queues, "schema": self.schema, **self.baton_options}
                app = Baton(url, **options)
                app.register(run_task)
                self._app = app
            return self._app

    def close_connections(self) -> None:
        """Close the connections Baton opened for this backend (they reopen on next use); a
        started node keeps its own. Done for you before Django creates, copies or drops a
        database (see `_release_connections`)."""
        app = self._app
        if app is None or app.running:
            return
        try:
            app.close_sync()
        except Exception:  # never fail Django's own database work for it
            log.warning("Baton: could not close the connections of TASKS[%r]", self.alias, exc_info=True)

    def _own_transaction(self) -> Any:
        """Django's raw connection to `DATABASE` when it is inside an atomic block (Baton's
        tables live there): enqueues join that transaction and results are read in it."""
        if not self.same_database:
            return None
        connection = connections[self.database]
        if not connection.in_atomic_block:
            return None
        connection.ensure_connection()
        return connection.connection

    @contextlib.contextmanager
    def _baton_search_path(self, raw: Any) -> Iterator[None]:
        """With a non-public `SCHEMA` on PostgreSQL: Baton's schema first on the search path of
        Django's connection for one operation only (set back before Django's next query)."""
        if connections[self.database].vendor != "postgresql" or self.schema == "public":
            yield
            return
        with raw.cursor() as cur:
            cur.execute("SELECT current_setting('search_path')")
            previous = cur.fetchone()[0]
            cur.execute("SELECT set_config('search_path', %s, true)", [self.schema])
        try:
            yield
        finally:
            with raw.cursor() as cur:
                cur.execute("SELECT set_config('search_path', %s, true)", [previous])

    # -- enqueue ----------------------------------------------------------------------

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:  # type: ignore[type-arg, override]
        """Insert the task as a Baton job (in the caller's transaction when there is one)."""
        self.validate_task(task)
        run_after = task.run_after
        if run_after is not None and timezone.is_naive(run_after):
            run_after = timezone.make_aware(run_after, UTC if settings.USE_TZ else timezone.get_default_timezone())
        spec = run_task.new(
            {"task": task.module_path, "args": list(args), "kwargs": dict(kwargs), "backend": self.alias},
            queue=task.queue_name,
            priority=_priority(task.priority),
            max_attempts=self.max_attempts,
            scheduled_at=run_after,
        )
        job = self._insert(spec)
        result = self._to_result(task, job)
        task_enqueued.send(type(self), task_result=result)
        return result

    def _insert(self, spec: JobSpec) -> Job:
        raw = self._own_transaction()
        if raw is None:
            return self.app.insert_sync(spec)
        with self._baton_search_path(raw):
            return self.app.insert_sync(spec, conn=raw)

    # -- results ----------------------------------------------------------------------

    def get_result(self, result_id: str) -> TaskResult:  # type: ignore[type-arg]
        """The task result of job `result_id` as stored now."""
        try:
            job_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        job = self._read_job(job_id) if job_id > 0 else None
        if job is None or job.worker != WORKER_NAME:
            raise TaskResultDoesNotExist(result_id)
        return self.result_of(job)

    def _read_job(self, job_id: int) -> Job | None:
        # Inside an atomic block on Baton's database, read in that transaction: it sees the
        # tasks the caller enqueued in it (a Django TestCase runs every test in one).
        raw = self._own_transaction()
        if raw is None:
            return self.app.engine.run_sync(store.get_job, job_id)
        with self._baton_search_path(raw):
            return self.app.engine.run_on_sync(raw, store.get_job, job_id)

    def result_of(self, job: Job) -> TaskResult:  # type: ignore[type-arg]
        """The TaskResult a Baton job stands for."""
        task = import_string(job.args["task"])
        return self._to_result(task, job)

    def _to_result(self, task: Task, job: Job) -> TaskResult:  # type: ignore[type-arg]
        finished = job.completed_at or job.discarded_at or job.cancelled_at
        node = (job.attempted_by or ["?"])[0]
        result = TaskResult(
            task=task,
            id=str(job.id),
            status=_STATUS[job.state],
            enqueued_at=job.inserted_at,
            started_at=job.attempted_at if job.attempt else None,
            finished_at=finished if job.state in ("completed", "discarded", "cancelled") else None,
            last_attempted_at=job.attempted_at if job.attempt else None,
            args=list(job.args.get("args", [])),
            kwargs=dict(job.args.get("kwargs", {})),
            backend=self.alias,
            errors=[
                TaskError(
                    exception_class_path=_exception_path(str(e.get("error") or "")),
                    traceback=str(e.get("traceback") or e.get("error") or ""),
                )
                for e in job.errors
            ],
            worker_ids=[node] * job.attempt,
        )
        if job.state == "completed":
            object.__setattr__(result, "_return_value", job.meta.get("result"))
        return result


_BACKENDS: weakref.WeakSet[BatonBackend] = weakref.WeakSet()


def _release_connections(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Django connects without a database (alias NO_DB_ALIAS) to create, copy or drop one: the
    test runner's setup and teardown (Django's and pytest-django's alike), and the clones of
    `test --parallel`. PostgreSQL refuses to drop or copy a database while other sessions use
    it ("database ... is being accessed by other users"), so every Baton backend closes the
    connections it opened first, as Django closes its own; they reopen on next use."""
    if getattr(connection, "alias", None) != NO_DB_ALIAS:
        return
    for backend in list(_BACKENDS):
        backend.close_connections()


connection_created.connect(_release_connections, dispatch_uid="baton.contrib.django.release_connections")


def get_app(alias: str = "default") -> Baton:
    """The Baton app behind the Django Tasks backend `alias` (to insert Baton jobs and
    workflows directly, or for `baton.testing`)."""
    backend = task_backends[alias]
    if not isinstance(backend, BatonBackend):
        raise ImproperlyConfigured(
            f"TASKS[{alias!r}] is {type(backend).__name__}, not baton.contrib.django.BatonBackend"
        )
    return backend.app
