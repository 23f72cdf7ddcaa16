"""Workers: the code a job runs. Declare one with `@app.worker(...)` on a function (sync or
async) or by subclassing `baton.Worker`; both carry the same options and build jobs with `.new()`."""

from __future__ import annotations

import difflib
import importlib
import inspect
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from .errors import ValidationError, WorkerImportError
from .job import CHAIN_POLICY_KEY, LEGACY_CHAIN_POLICY_KEY, MAX_DELAY, Job, JobSpec, Unique, check_json

CHAIN_MODES = ("ignore", "hold", "halt")
# The per-job options of `.new(args, ...)`.
NEW_OPTIONS = ("queue", "priority", "max_attempts", "tags", "meta", "schedule_in", "scheduled_at", "unique")
EXECUTORS = ("thread", "process")
_MISSING: Any = object()


def default_backoff(attempt: int) -> float:
    """`15 + 2**attempt` seconds with +-10% jitter (SPEC section 1)."""
    base = 15 + 2 ** min(attempt, 24)
    return base * random.uniform(0.9, 1.1)


def unknown_option(name: str, valid: Sequence[str], what: str) -> ValidationError:
    """The error for an unknown keyword option `name`: the close match if there is one, and
    every valid option."""
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ValidationError(name, f"unknown {what}; {hint}the options are {', '.join(valid)}")


class WorkerOptions:
    """Validated options shared by function and class workers."""

    __slots__ = (
        "chain_by",
        "executor",
        "max_attempts",
        "name",
        "on_cancelled",
        "on_discarded",
        "priority",
        "queue",
        "record",
        "tags",
        "timeout",
        "unique",
    )

    def __init__(
        self,
        name: str,
        *,
        queue: str = "default",
        max_attempts: int = 20,
        priority: int = 0,
        tags: Sequence[str] = (),
        timeout: float | None = None,
        unique: Mapping[str, Any] | bool | None = None,
        chain_by: Sequence[str] | None = None,
        on_discarded: str = "ignore",
        on_cancelled: str = "ignore",
        record: bool | None = None,
        executor: str = "thread",
    ) -> None:
        self.name = name
        # JobSpec validates queue/priority/max_attempts/tags; build a probe to reuse that.
        probe = JobSpec(worker=name, queue=queue, max_attempts=max_attempts, priority=priority, tags=tags)  # type: ignore[arg-type]
        self.queue, self.max_attempts, self.priority, self.tags = queue, max_attempts, priority, probe.tags
        if timeout is not None and (
            not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= MAX_DELAY
        ):
            raise ValidationError("timeout", f"must be a number of seconds > 0 or None (no timeout), got {timeout!r}")
        self.timeout = float(timeout) if timeout is not None else None
        self.unique = Unique.parse(unique)
        if chain_by is not None:
            if isinstance(chain_by, str | bytes | Mapping) or not isinstance(chain_by, Sequence) or not chain_by:
                raise ValidationError(
                    "chain_by", f"must be a non-empty list like ['args.account_id'], got {chain_by!r}"
                )
            for path in chain_by:
                root, _, key = path.partition(".") if isinstance(path, str) else ("", "", "")
                if root not in ("args", "meta") or not key:
                    raise ValidationError(
                        "chain_by", f"{path!r} must name an arg or meta key, e.g. 'args.account_id' or 'meta.tenant'"
                    )
            self.chain_by: tuple[str, ...] | None = tuple(chain_by)
        else:
            self.chain_by = None
        for opt, value in (("on_discarded", on_discarded), ("on_cancelled", on_cancelled)):
            if value not in CHAIN_MODES:
                raise ValidationError(opt, f"must be one of {list(CHAIN_MODES)}, got {value!r}")
        self.on_discarded, self.on_cancelled = on_discarded, on_cancelled
        if record is not None and not isinstance(record, bool):
            raise ValidationError("record", "must be True, False or None (record workflow step results)")
        self.record = record
        if executor not in EXECUTORS:
            raise ValidationError(
                "executor",
                f"must be 'thread' (sync workers on the node's threads) or 'process' (CPU-bound sync workers "
                f"in a pool of processes), got {executor!r:.80}",
            )
        self.executor = executor

    def chain_key(self, args: Mapping[str, Any], meta: Mapping[str, Any]) -> str | None:
        """The key that orders this worker's jobs one at a time, or None when not chained."""
        if self.chain_by is None:
            return None
        values = []
        for path in self.chain_by:
            root, _, key = path.partition(".")
            source = args if root == "args" else meta
            if key not in source:
                raise ValidationError(
                    f"{root}.{key}", f"worker {self.name} is chained by {path!r}, so every job needs that key"
                )
            values.append(source[key])
        return f"{self.name}:{check_json(', '.join(self.chain_by), values)}"

    def new(
        self,
        args: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        tags: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
        schedule_in: float | None = None,
        scheduled_at: datetime | None = None,
        unique: Any = _MISSING,
        **unknown: Any,
    ) -> JobSpec:
        """Build a validated JobSpec for this worker; per-job options override the worker's."""
        if unknown:
            raise unknown_option(sorted(unknown)[0], NEW_OPTIONS, "option of .new()")
        if args is None:
            args = {}
        elif type(args) is not dict and not isinstance(args, Mapping):
            raise ValidationError("args", f"must be a dict of JSON values, got {type(args).__name__}")
        if meta is not None and type(meta) is not dict and not isinstance(meta, Mapping):
            raise ValidationError("meta", f"must be a dict of JSON values, got {type(meta).__name__}")
        meta = dict(meta) if meta else {}
        chain_key = self.chain_key(args, meta)
        if chain_key is not None:
            # The policy goes under Baton's own key, so a meta key "chain" of the caller's (a
            # chain_by key, say) neither changes it nor is changed; the old key only when free.
            policy = {"on_discarded": self.on_discarded, "on_cancelled": self.on_cancelled}
            meta[CHAIN_POLICY_KEY] = policy
            meta.setdefault(LEGACY_CHAIN_POLICY_KEY, policy)
        return JobSpec(
            worker=self.name,
            args=dict(args),
            queue=queue if queue is not None else self.queue,
            priority=priority if priority is not None else self.priority,
            max_attempts=max_attempts if max_attempts is not None else self.max_attempts,
            tags=tags if tags is not None else list(self.tags),  # type: ignore[arg-type]
            meta=meta,
            schedule_in=schedule_in,
            scheduled_at=scheduled_at,
            unique=self.unique if unique is _MISSING else Unique.parse(unique),
            chain_key=chain_key,
        )


class Worker:
    """Base class for class-form workers. Override `perform(self, job)` (sync or async).

    Options are class attributes: `queue`, `max_attempts`, `priority`, `tags`, `timeout`,
    `unique`, `chain_by`, `on_discarded`, `on_cancelled`, `record`, `executor`, and `name` (defaults to
    the import path `module.QualName`). Subclasses register themselves by name on definition.
    """

    name: ClassVar[str]
    queue: ClassVar[str] = "default"
    max_attempts: ClassVar[int] = 20
    priority: ClassVar[int] = 0
    tags: ClassVar[Sequence[str]] = ()
    timeout: ClassVar[float | None] = None
    unique: ClassVar[Mapping[str, Any] | bool | None] = None
    chain_by: ClassVar[Sequence[str] | None] = None
    on_discarded: ClassVar[str] = "ignore"
    on_cancelled: ClassVar[str] = "ignore"
    record: ClassVar[bool | None] = None
    executor: ClassVar[str] = "thread"
    options: ClassVar[WorkerOptions]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = f"{cls.__module__}.{cls.__qualname__}"
        cls.options = WorkerOptions(
            cls.name,
            queue=cls.queue,
            max_attempts=cls.max_attempts,
            priority=cls.priority,
            tags=cls.tags,
            timeout=cls.timeout,
            unique=cls.unique,
            chain_by=cls.chain_by,
            on_discarded=cls.on_discarded,
            on_cancelled=cls.on_cancelled,
            record=cls.record,
            executor=cls.executor,
        )
        check_executor(cls.options, cls, inspect.iscoroutinefunction(cls.perform))
        if "perform" in cls.__dict__ or not inspect.isabstract(cls):
            GLOBAL_REGISTRY[cls.name] = WorkerDef.from_class(cls)

    @classmethod
    def new(cls, args: Mapping[str, Any] | None = None, **opts: Any) -> JobSpec:
        """Build a JobSpec for this worker (see `WorkerOptions.new`)."""
        return cls.options.new(args, **opts)

    def perform(self, job: Job) -> Any:
        """Do the work. Return a value, or return/raise Snooze, Cancel or Discard."""
        raise NotImplementedError(f"{type(self).__name__}.perform(job) is not implemented")

    def backoff(self, job: Job) -> float:
        """Seconds to wait before the next attempt after `job` failed."""
        return default_backoff(job.attempt)

    def after_cancelled(self, reason: str, job: Job) -> None:
        """Called when a workflow cascade cancels this step (`reason`: cancelled, discarded, deleted)."""


def check_executor(options: WorkerOptions, code: Any, is_async: bool) -> None:
    """A process worker must be sync code a child process can import by name."""
    if options.executor != "process":
        return
    if is_async:
        raise ValidationError(
            "executor",
            f"worker {options.name} is async: async workers run on the event loop; use executor='process' "
            "only for sync (CPU-bound) code",
        )
    qualname = getattr(code, "__qualname__", "")
    if "<locals>" in qualname or "<lambda>" in qualname or not getattr(code, "__module__", None):
        raise ValidationError(
            "executor",
            f"worker {options.name} ({qualname or code!r}) must be defined at module level for "
            "executor='process': a worker process imports it by its module and name",
        )


class WorkerDef:
    """How a node runs one worker: its options and three callables."""

    __slots__ = ("after_cancelled", "backoff", "is_async", "options", "perform", "source")

    def __init__(
        self,
        options: WorkerOptions,
        perform: Callable[[Job], Any],
        backoff: Callable[[Job], float],
        after_cancelled: Callable[[str, Job], Any] | None,
        source: Any,
        is_async: bool,
    ) -> None:
        self.options, self.perform, self.backoff = options, perform, backoff
        self.after_cancelled, self.source, self.is_async = after_cancelled, source, is_async

    @property
    def name(self) -> str:
        """The registered worker name."""
        return self.options.name

    @classmethod
    def from_class(cls, worker_cls: type[Worker]) -> WorkerDef:
        """Definition for a Worker subclass; a fresh instance serves each job."""
        is_async = inspect.iscoroutinefunction(worker_cls.perform)

        def perform(job: Job) -> Any:
            return worker_cls().perform(job)

        def backoff(job: Job) -> float:
            return worker_cls().backoff(job)

        after = None
        if worker_cls.after_cancelled is not Worker.after_cancelled:

            def after(reason: str, job: Job) -> Any:
                return worker_cls().after_cancelled(reason, job)

        return cls(worker_cls.options, perform, backoff, after, worker_cls, is_async)


GLOBAL_REGISTRY: dict[str, WorkerDef] = {}


class FunctionWorker:
    """What `@app.worker(...)` returns: still callable as the function, plus `.new(args)`."""

    def __init__(
        self,
        fn: Callable[..., Any],
        options: WorkerOptions,
        backoff: Callable[[Job], float] | None = None,
        after_cancelled: Callable[[str, Job], Any] | None = None,
    ) -> None:
        check_executor(options, fn, inspect.iscoroutinefunction(fn))
        self.fn = fn
        self.options = options
        self.name = options.name
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", options.name)
        self.__wrapped__ = fn
        self.definition = WorkerDef(
            options,
            fn,
            backoff or (lambda job: default_backoff(job.attempt)),
            after_cancelled,
            self,
            inspect.iscoroutinefunction(fn),
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def new(self, args: Mapping[str, Any] | None = None, **opts: Any) -> JobSpec:
        """Build a validated JobSpec for this worker (options: queue, priority, max_attempts,
        tags, meta, schedule_in, scheduled_at, unique)."""
        return self.options.new(args, **opts)

    def __repr__(self) -> str:
        return f"<worker {self.name} queue={self.options.queue}>"


def import_worker(name: str) -> WorkerDef | None:
    """Resolve an import path (`module.func`, `module.Class`, `module.Outer.Inner`) to a
    worker definition, or None when nothing importable has that name.

    Raises `WorkerImportError` when a module on the path exists but raises while being
    imported (anything but "no module of that name": a RuntimeError about a missing setting,
    an ImportError of one of its own dependencies), so the real error can be reported."""
    if not isinstance(name, str):
        return None
    parts = name.split(".")
    if not all(parts):  # ".x", "a..b", "x.": relative or malformed, never an import path
        return None
    # The longest prefix that is a module, imported one package at a time so that an error
    # names the module that raised it; the rest are attributes (`module.Outer.Inner`).
    target: Any = None
    cut = 0
    for end in range(1, len(parts)):
        module = ".".join(parts[:end])
        try:
            target = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if _is_absent(exc, module):
                break
            raise WorkerImportError(name, module, exc) from exc
        except (Exception, SystemExit) as exc:  # a module calling sys.exit() must not stop the node
            raise WorkerImportError(name, module, exc) from exc
        cut = end
    if cut == 0:
        return None
    for attr in parts[cut:]:
        target = getattr(target, attr, None)
    if isinstance(target, FunctionWorker):
        return target.definition
    if isinstance(target, type) and issubclass(target, Worker):
        return GLOBAL_REGISTRY.get(target.name) or WorkerDef.from_class(target)
    return GLOBAL_REGISTRY.get(name)


def _is_absent(exc: ModuleNotFoundError, module: str) -> bool:
    """Whether `exc`, raised importing `module`, says that `module` (or a package above it)
    does not exist, rather than that a module it imports is missing."""
    missing = exc.name
    return missing is None or module == missing or module.startswith(missing + ".")
