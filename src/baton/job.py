"""The job vocabulary every part of Baton speaks: `JobSpec` (what to insert), `Job` (a stored
row), job states, and the `Snooze` / `Cancel` / `Discard` results a worker may return or raise."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from .errors import ValidationError

STATES: Final = (
    "available",
    "scheduled",
    "suspended",
    "executing",
    "retryable",
    "completed",
    "discarded",
    "cancelled",
)
TERMINAL_STATES: Final = frozenset({"completed", "discarded", "cancelled"})
FAILED_STATES: Final = frozenset({"discarded", "cancelled"})
DEFAULT_UNIQUE_STATES: Final = ("available", "scheduled", "suspended", "executing", "retryable", "completed")
UNIQUE_FIELDS: Final = ("worker", "queue", "args", "meta")

JSON = Any


def dumps(value: Any) -> str:
    """Compact JSON, the form every JSON column is written in."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def check_json(field_name: str, value: Any) -> str:
    """Serialise `value` or raise a ValidationError naming `field_name`."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            field_name,
            f"must be JSON-serialisable ({exc}); pass plain dicts, lists, str, int, float, bool or None",
        ) from None


def to_datetime(value: Any) -> datetime | None:
    """Read a timestamp column: PostgreSQL gives datetimes, SQLite unix seconds."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(float(value), UTC)


def _json_column(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


# --------------------------------------------------------------------------- worker results


class _Outcome(Exception):
    """A result a worker returns or raises to steer its job (not an error)."""


class Snooze(_Outcome):
    """Run the job again in `seconds`; the attempt is not counted as a failure."""

    def __init__(self, seconds: float) -> None:
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0 or math.isnan(seconds):
            raise ValidationError("seconds", f"Snooze needs a number of seconds >= 0, got {seconds!r}")
        self.seconds = float(seconds)
        super().__init__(f"snoozed for {self.seconds:g}s")


class Cancel(_Outcome):
    """Stop the job for good: it ends `cancelled` with `reason` recorded in its errors."""

    def __init__(self, reason: str = "cancelled by worker") -> None:
        self.reason = str(reason)
        super().__init__(self.reason)


class Discard(_Outcome):
    """Give up on the job: it ends `discarded` with `reason` recorded in its errors."""

    def __init__(self, reason: str = "discarded by worker") -> None:
        self.reason = str(reason)
        super().__init__(self.reason)


# --------------------------------------------------------------------------- unique options


@dataclass(frozen=True, slots=True)
class Unique:
    """Normalised `unique=` options: at most one job per key among `states` within `period`."""

    period: float | None = 60.0
    fields: tuple[str, ...] = ("worker", "queue", "args")
    keys: tuple[str, ...] | None = None
    states: tuple[str, ...] = DEFAULT_UNIQUE_STATES

    @classmethod
    def parse(cls, value: Unique | Mapping[str, Any] | bool | None) -> Unique | None:
        """Validate user input (`True`, a dict, or a Unique) into a Unique, naming bad fields."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, Unique):
            return value
        if not isinstance(value, Mapping):
            raise ValidationError("unique", "must be a dict like {'period': 60, 'keys': ['id']}, True or None")
        unknown = set(value) - {"period", "fields", "keys", "states"}
        if unknown:
            raise ValidationError("unique", f"unknown option(s) {sorted(unknown)}; use period, fields, keys, states")
        period = value.get("period", 60.0)
        if period is not None and (not isinstance(period, int | float) or isinstance(period, bool) or period <= 0):
            raise ValidationError("unique.period", f"must be a number of seconds > 0 or None (forever), got {period!r}")
        fields = tuple(value.get("fields", ("worker", "queue", "args")))
        bad = [f for f in fields if f not in UNIQUE_FIELDS]
        if bad or not fields:
            raise ValidationError(
                "unique.fields", f"must be a non-empty subset of {list(UNIQUE_FIELDS)}, got {list(fields)}"
            )
        keys = value.get("keys")
        if keys is not None:
            if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
                raise ValidationError("unique.keys", "must be a list of argument/meta key names")
            keys = tuple(keys)
        states = tuple(value.get("states", DEFAULT_UNIQUE_STATES))
        bad = [s for s in states if s not in STATES]
        if bad or not states:
            raise ValidationError("unique.states", f"unknown state(s) {bad}; choose from {list(STATES)}")
        return cls(float(period) if period is not None else None, fields, keys, states)

    def key_for(self, worker: str, queue: str, args: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
        """The hash two jobs share exactly when they conflict."""
        parts: dict[str, Any] = {}
        for f in self.fields:
            if f == "worker":
                parts[f] = worker
            elif f == "queue":
                parts[f] = queue
            else:
                source = args if f == "args" else meta
                parts[f] = source if self.keys is None else {k: source.get(k) for k in self.keys}
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
        return digest[:40]


# --------------------------------------------------------------------------- JobSpec


@dataclass(slots=True)
class JobSpec:
    """A job to insert. Build one with `worker.new(args, ...)`; every field is validated then."""

    worker: str
    args: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 20
    tags: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    scheduled_at: datetime | None = None
    schedule_in: float | None = None
    unique: Unique | None = None
    chain_key: str | None = None
    # Serialised args/meta, filled by validate(); reused by inserts so args are dumped once.
    args_json: str = ""
    meta_json: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field, raising ValidationError naming the first bad one."""
        if not isinstance(self.worker, str) or not self.worker.strip():
            raise ValidationError("worker", "must be a non-empty worker name or import path")
        if not isinstance(self.args, Mapping):
            raise ValidationError("args", f"must be a dict of JSON values, got {type(self.args).__name__}")
        self.args_json = check_json("args", dict(self.args)) if self.args else "{}"
        if not isinstance(self.meta, Mapping):
            raise ValidationError("meta", f"must be a dict of JSON values, got {type(self.meta).__name__}")
        self.meta_json = check_json("meta", dict(self.meta)) if self.meta else "{}"
        if not isinstance(self.queue, str) or not self.queue.strip() or len(self.queue) > 128:
            raise ValidationError("queue", f"must be a non-empty name of at most 128 characters, got {self.queue!r}")
        if not isinstance(self.priority, int) or isinstance(self.priority, bool) or not 0 <= self.priority <= 9:
            raise ValidationError("priority", f"must be an integer from 0 (highest) to 9, got {self.priority!r}")
        if not isinstance(self.max_attempts, int) or isinstance(self.max_attempts, bool) or self.max_attempts < 1:
            raise ValidationError("max_attempts", f"must be an integer >= 1, got {self.max_attempts!r}")
        if isinstance(self.tags, str) or not isinstance(self.tags, Iterable):
            raise ValidationError("tags", "must be a list of strings")
        self.tags = list(self.tags)
        if not all(isinstance(t, str) for t in self.tags):
            raise ValidationError("tags", f"must be a list of strings, got {self.tags!r}")
        if self.schedule_in is not None:
            if (
                not isinstance(self.schedule_in, int | float)
                or isinstance(self.schedule_in, bool)
                or not math.isfinite(self.schedule_in)
                or self.schedule_in < 0
            ):
                raise ValidationError("schedule_in", f"must be a number of seconds >= 0, got {self.schedule_in!r}")
            if self.scheduled_at is not None:
                raise ValidationError("schedule_in", "give either schedule_in or scheduled_at, not both")
        if self.scheduled_at is not None:
            if not isinstance(self.scheduled_at, datetime):
                raise ValidationError("scheduled_at", f"must be a datetime, got {type(self.scheduled_at).__name__}")
            if self.scheduled_at.tzinfo is None:
                raise ValidationError(
                    "scheduled_at", "must be timezone-aware, e.g. datetime.now(UTC) + timedelta(minutes=5)"
                )

    @property
    def is_scheduled(self) -> bool:
        """Whether the job starts `scheduled` rather than `available`."""
        return self.scheduled_at is not None or bool(self.schedule_in)

    def unique_key(self) -> str | None:
        """The conflict key for unique jobs, or None."""
        if self.unique is None:
            return None
        return self.unique.key_for(self.worker, self.queue, self.args, self.meta)


# --------------------------------------------------------------------------- Job


@dataclass(slots=True, eq=False)
class Job:
    """A job row as stored, plus what a running step can read (`upstream`) and write (`log`)."""

    id: int
    state: str
    queue: str
    worker: str
    args: dict[str, Any]
    meta: dict[str, Any]
    tags: list[str]
    errors: list[dict[str, Any]]
    attempt: int
    max_attempts: int
    priority: int
    inserted_at: datetime | None = None
    scheduled_at: datetime | None = None
    attempted_at: datetime | None = None
    completed_at: datetime | None = None
    cancelled_at: datetime | None = None
    discarded_at: datetime | None = None
    attempted_by: list[str] | None = None
    workflow_id: str | None = None
    chain_key: str | None = None
    conflict: bool = False
    # Runtime context, filled for the executing attempt only.
    step: str | None = None
    decode_error: str | None = None
    _upstream: dict[str, Any] | None = None
    _deps: tuple[str, ...] = ()
    _logs: list[tuple[str, str]] = field(default_factory=list)
    _recorded: tuple[Any] | None = None  # (result,) when an earlier attempt already recorded one

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return (
            f"<Job {self.id} {self.worker} {self.state} queue={self.queue} attempt={self.attempt}/{self.max_attempts}>"
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        """Build a Job from a `baton_jobs` row of either engine."""
        decode_error = None
        try:
            args = _json_column(row["args"])
            if not isinstance(args, dict):
                raise ValueError(f"args is a {type(args).__name__}, not a JSON object")
        except ValueError as exc:
            args, decode_error = {}, f"args do not decode: {exc}"
        meta = _json_column(row.get("meta")) or {}
        attempted_by = row.get("attempted_by")
        return cls(
            id=row["id"],
            state=row["state"],
            queue=row["queue"],
            worker=row["worker"],
            args=args,
            meta=meta,
            tags=_json_column(row.get("tags")) or [],
            errors=_json_column(row.get("errors")) or [],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            priority=row["priority"],
            inserted_at=to_datetime(row.get("inserted_at")),
            scheduled_at=to_datetime(row.get("scheduled_at")),
            attempted_at=to_datetime(row.get("attempted_at")),
            completed_at=to_datetime(row.get("completed_at")),
            cancelled_at=to_datetime(row.get("cancelled_at")),
            discarded_at=to_datetime(row.get("discarded_at")),
            attempted_by=_json_column(attempted_by) if attempted_by is not None else None,
            workflow_id=row.get("workflow_id"),
            chain_key=row.get("chain_key"),
            step=row.get("step"),
            decode_error=decode_error,
        )

    # -- what a running workflow step can do ------------------------------------------

    def upstream(self, name: str) -> Any:
        """The recorded return value of dependency step `name` (None if it returned nothing)."""
        if self._upstream is None:
            raise ValidationError("name", "upstream() is only available inside a running workflow step")
        if name not in self._deps:
            raise ValidationError(
                "name", f"{name!r} is not a dependency of step {self.step!r}; deps are {list(self._deps)}"
            )
        return self._upstream.get(name)

    def upstream_all(self) -> dict[str, Any]:
        """Every dependency's recorded return value, by step name."""
        if self._upstream is None:
            raise ValidationError("name", "upstream_all() is only available inside a running workflow step")
        return {name: self._upstream.get(name) for name in self._deps}

    def log(self, level: str, message: str) -> None:
        """Record a debug log line for this attempt (stored in `workflow_debug_logs` with its ack)."""
        level = str(level).lower()
        if level not in {"debug", "info", "warning", "error"}:
            raise ValidationError("level", f"must be one of debug, info, warning, error; got {level!r}")
        self._logs.append((level, str(message)))


def ids_of(jobs: Sequence[Job | int]) -> list[int]:
    """Job ids from a mix of Jobs and ids."""
    return [j.id if isinstance(j, Job) else int(j) for j in jobs]
