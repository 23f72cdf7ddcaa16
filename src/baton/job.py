"""The job vocabulary every part of Baton speaks: `JobSpec` (what to insert), `Job` (a stored
row), job states, and the `Snooze` / `Cancel` / `Discard` results a worker may return or raise."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from itertools import chain
from types import MappingProxyType
from typing import Any, Final

from .errors import JobCancelled, ValidationError

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
# The meta key under which a chained job carries its worker's on_discarded / on_cancelled at
# insert time (read by the ack, the insert of later links and the Lifeline). Baton's own: on a
# chained worker's jobs `.new()` sets it, whatever the caller's meta holds there. Releases
# before 0.2 used meta["chain"], which a user's own meta key of that name silently replaced;
# it is still written when free, for nodes of those releases during a rolling upgrade, and
# read for jobs they inserted (no "baton_chain").
CHAIN_POLICY_KEY: Final = "baton_chain"
LEGACY_CHAIN_POLICY_KEY: Final = "chain"

JSON = Any


def _encode_default(value: Any) -> Any:
    """What the JSON encoder makes of a value it does not know: a read-only mapping (what
    `freeze` makes of a JSON object, e.g. a value of `job.context`) is the object it wraps;
    anything else is not JSON."""
    if type(value) is MappingProxyType:
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# Built once: json.dumps with options builds a new encoder at every call. The default is only
# called for values the encoder does not know, so plain JSON costs nothing more.
_DUMPS: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_encode_default).encode
_STRICT_DUMPS: Final = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_encode_default
).encode


def dumps(value: Any) -> str:
    """Compact JSON, the form every JSON column is written in."""
    return _DUMPS(value)


# A JSON string (skipped whole), or a number in exponent form with a positive exponent: how
# Python writes the floats from 1e16 up (repr), never an int.
_EXPONENT_FLOAT: Final = re.compile(r'"(?:[^"\\]|\\.)*"|(-?\d+(?:\.\d+)?e\+\d+)')


def _spelled_out(match: re.Match[str]) -> str:
    number = match.group(1)
    return match.group(0) if number is None else format(Decimal(number), "f") + ".0"


def jsonb_text(text: str) -> str:
    """`text` (JSON as `dumps` writes it) for a PostgreSQL jsonb column: each float written in
    exponent form (`1e+16`, Python's spelling of floats from 1e16 up) spelled out with a
    fractional part (`10000000000000000.0`). jsonb keeps a number's value and scale, not its
    spelling: it reads `1e+16` back as the integer 10000000000000000, but keeps the `.0`, so the
    float comes back a float, equal to the one written (the same digits, exact for every
    double). Strings are left as they are; text without `e+` is returned unchanged."""
    if "e+" not in text:
        return text
    return _EXPONENT_FLOAT.sub(_spelled_out, text)


def check_json(field_name: str, value: Any) -> str:
    """Serialise `value` or raise a ValidationError naming `field_name`: it must be JSON that
    every engine can store, so no NaN/Infinity, no NUL character and no lone surrogate in any
    string or key (see `storable_text_error`), and every key of every object a string (the
    encoder would turn 1, True and None into "1", "true" and "null", silently merging them with
    string keys of that spelling). Read-only mappings (`job.context` values) are objects."""
    try:
        text = _STRICT_DUMPS(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValidationError(
            field_name,
            f"must be JSON-serialisable ({exc}); pass plain dicts, lists, str, int, float, bool or None",
        ) from None
    # One pass over the serialised text instead of a walk over the value: json.dumps escapes
    # NUL as \u0000 (a literal backslash-u0000 in a string comes out as \\u0000) and carries
    # lone surrogates through, which then fail to encode.
    if ("\\u0000" in text and _NUL_ESCAPE.search(text)) or not _utf8_ok(text):
        where, problem = _find_unstorable(value, "") or ("", "holds text that cannot be stored")
        raise ValidationError(field_name, f"{where}{problem}")
    # The encoder turns a key 1 into "1" without a word: check that every key is a string.
    objects = text.count("{")  # at most that many objects: the walk stops once it saw them all
    if objects:
        try:
            if objects == 1 and type(value) is dict:  # a flat object, the usual args
                "".join(value)  # a C loop that refuses anything but strings
            else:
                _walk_keys(value, [objects])
        except TypeError:
            raise _key_error(field_name, value) from None
        except RecursionError:  # deeper than the walk can go, though not than the encoder
            raise ValidationError(
                field_name, "is nested too deeply to check; pass plain dicts, lists, str, int, float, bool or None"
            ) from None
    return text


_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


def _walk_keys(value: Any, left: list[int]) -> None:
    """Raise TypeError at the first mapping in `value` with a key that is not a str; `left`
    counts down the objects not seen yet (from the number of "{" in the value's JSON), and
    nothing more is walked once it reaches 0, so a flat dict of long lists costs one step.
    Keys are checked by a C loop (str.join refuses anything but strings), and a long list of
    scalars or of records by a few, not a step per item."""
    kind = type(value)
    if kind is list or kind is tuple:
        items: Any = value
        if len(value) >= 16:  # one pass of C loops over a long list of scalars or of records
            kinds = set(map(type, value))
            if kinds <= _SCALARS:
                return
            if kinds == _DICT_TYPE:
                left[0] -= len(value)
                "".join(chain.from_iterable(value))
                items = [*chain.from_iterable(map(dict.values, value))]
                if set(map(type, items)) <= _SCALARS:
                    return
    elif kind is dict or kind is MappingProxyType or isinstance(value, Mapping):
        left[0] -= 1
        "".join(value)
        items = value.values()
    else:
        return
    for item in items:
        if type(item) not in _SCALARS and left[0] > 0:
            _walk_keys(item, left)


_DICT_TYPE: Final = frozenset({dict})


def _key_error(field_name: str, value: Any) -> ValidationError:
    """The error for a value with a key that is not a string, naming where it is."""
    path, key = _find_non_string_key(value) or ("", None)
    stored = next(iter(json.loads(_DUMPS({key: 0}))))
    return ValidationError(
        f"{field_name}{path}",
        f"is a key of type {type(key).__name__}, but JSON object keys are strings: it would be stored as the "
        f"key {stored!r}, merged with any key of that spelling; use string keys",
    )


def _find_non_string_key(value: Any) -> tuple[str, Any] | None:
    """(path, key) of the first key in `value` that is not a string, e.g. ("['a'][1]", 1)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"[{key!r}]", key
            if type(item) not in _SCALARS and (found := _find_non_string_key(item)) is not None:
                return f"[{key!r}]{found[0]}", found[1]
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if type(item) not in _SCALARS and (found := _find_non_string_key(item)) is not None:
                return f"[{i}]{found[0]}", found[1]
    return None


# \u0000 not itself escaped: preceded by an even number of backslashes.
_NUL_ESCAPE: Final = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
MAX_INT4: Final = 2**31 - 1
MAX_BIGINT: Final = 2**63 - 1
MAX_DELAY: Final = 100 * 365.25 * 86400  # seconds: the longest schedule_in or unique period


def _utf8_ok(text: str) -> bool:
    if text.isascii():  # O(1) in CPython
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_text_error(text: str) -> str | None:
    """Why `text` cannot be stored as text or JSON by every engine, or None when it can.

    PostgreSQL refuses NUL characters in text and jsonb, and no engine can encode a lone
    surrogate (what `os.fsdecode` makes of an undecodable file name) as UTF-8. The message
    says what to do instead; callers prefix it with the field name."""
    if "\x00" in text:
        return (
            "contains a NUL character (\\x00), which PostgreSQL cannot store; remove it, or pass binary "
            "data encoded as text (e.g. base64)"
        )
    if not _utf8_ok(text):
        return (
            "contains a lone surrogate, which is not valid Unicode (e.g. an undecodable file name); pass "
            "valid text (decode bytes with errors='replace') or binary data encoded as text (e.g. base64)"
        )
    return None


def check_text(field_name: str, value: Any, *, what: str = "a string") -> str:
    """`value` if it is a str every engine can store, else a ValidationError naming `field_name`."""
    if not isinstance(value, str):
        raise ValidationError(field_name, f"must be {what}, got {type(value).__name__} {value!r:.80}")
    problem = storable_text_error(value)
    if problem is not None:
        raise ValidationError(field_name, f"{problem}; got {value!r:.80}")
    return value


def _find_unstorable(value: Any, path: str) -> tuple[str, str] | None:
    """(where, problem) for the first string or key in `value` that cannot be stored. Only
    called once a value is known to hold one, so the walk costs nothing on the hot path."""
    if isinstance(value, str):
        problem = storable_text_error(value)
        return (f"the value at {path} " if path else "", problem) if problem else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and (problem := storable_text_error(key)) is not None:
                return (f"the key {key!r} at {path or 'the top level'} ", problem)
            found = _find_unstorable(item, f"{path}[{key!r}]")
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _find_unstorable(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def storable(text: str) -> str:
    """`text` in a form every engine can store: NUL characters (PostgreSQL text cannot hold
    them) become the two characters ``\\0`` and lone surrogates (undecodable file names) become
    backslash escapes. Used for what a job produces on the way out: errors, tracebacks, logs."""
    if "\x00" in text:
        text = text.replace("\x00", "\\0")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def meta_count(value: Any) -> int:
    """A counter Baton keeps in a job's meta (`snoozed`, `rescued`), as read back. The keys are
    the user's too (`meta=` at insert): a value that is not an integer from 0 to 999 999 999
    counts as 0, so Baton's next write replaces it. The SQL that bumps `rescued` applies the
    same rule (release_on_shutdown.sql, rescue_orphans.sql)."""
    return value if type(value) is int and 0 <= value <= 999_999_999 else 0


def _decode_args(value: Any) -> tuple[dict[str, Any], str | None]:
    """A row's args, or ({}, why) when they do not decode to a JSON object (the job then
    errors with that reason instead of running on garbage)."""
    try:
        args = _json_column(value)
        if not isinstance(args, dict):
            raise ValueError(f"args is a {type(args).__name__}, not a JSON object")
    except ValueError as exc:
        return {}, f"args do not decode: {exc}"
    return args, None


def to_datetime(value: Any) -> datetime | None:
    """Read a timestamp column: PostgreSQL gives datetimes, SQLite unix seconds."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(float(value), UTC)


def _json_column(value: Any) -> Any:
    if isinstance(value, str):
        if value == "{}":  # the usual meta / args: no parser call
            return {}
        if value == "[]":  # the usual errors / tags
            return []
        return json.loads(value)
    return json.loads(value) if isinstance(value, bytes) else value


# --------------------------------------------------------------------------- worker results


class _Outcome(Exception):
    """A result a worker returns or raises to steer its job (not an error)."""


class Snooze(_Outcome):
    """Run the job again in `seconds`; the attempt is not counted as a failure."""

    def __init__(self, seconds: float) -> None:
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 <= seconds <= MAX_DELAY:
            raise ValidationError(
                "seconds", f"Snooze needs a number of seconds from 0 to {MAX_DELAY:.0f} (100 years), got {seconds!r}"
            )
        self.seconds = float(seconds)
        super().__init__(f"snoozed for {self.seconds:g}s")

    def __reduce__(self) -> tuple[type[Snooze], tuple[float]]:
        return (Snooze, (self.seconds,))  # pickles (for process workers) by its seconds, not its message


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


def _str_tuple(value: Any) -> tuple[str, ...] | None:
    """`value` as a tuple of strings when it is a list/tuple/set of strings, else None."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        return None
    out = tuple(value)
    return out if all(isinstance(v, str) for v in out) else None


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
        if period is not None and (
            not isinstance(period, int | float) or isinstance(period, bool) or not 0 < period <= MAX_DELAY
        ):
            raise ValidationError(
                "unique.period",
                f"must be a number of seconds > 0 and at most {MAX_DELAY:.0f} (100 years), or None (forever); "
                f"got {period!r}",
            )
        fields = _str_tuple(value.get("fields", ("worker", "queue", "args")))
        if fields is None or not fields or any(f not in UNIQUE_FIELDS for f in fields):
            raise ValidationError(
                "unique.fields",
                f"must be a non-empty list drawn from {list(UNIQUE_FIELDS)}, got {value.get('fields')!r:.200}",
            )
        keys = value.get("keys")
        if keys is not None:
            keys = _str_tuple(keys)
            if keys is None:
                raise ValidationError(
                    "unique.keys", f"must be a list of argument/meta key names, got {value.get('keys')!r:.200}"
                )
        states = _str_tuple(value.get("states", DEFAULT_UNIQUE_STATES))
        if states is None or not states or any(s not in STATES for s in states):
            bad = [s for s in states if s not in STATES] if states else value.get("states")
            raise ValidationError(
                "unique.states", f"must be a non-empty list of states from {list(STATES)}, got {bad!r:.200}"
            )
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
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=_key_default).encode()).hexdigest()
        return digest[:40]


def _key_default(value: Any) -> Any:
    """A unique key hashes a read-only mapping as the object it stores as."""
    return dict(value) if type(value) is MappingProxyType else str(value)


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
        if (problem := storable_text_error(self.worker)) is not None:
            raise ValidationError("worker", f"{problem}; got {self.worker!r:.80}")
        if type(self.args) is not dict:  # the usual case costs no ABC check and no copy
            if not isinstance(self.args, Mapping):
                raise ValidationError("args", f"must be a dict of JSON values, got {type(self.args).__name__}")
            self.args = dict(self.args)
        self.args_json = check_json("args", self.args) if self.args else "{}"
        if type(self.meta) is not dict:
            if not isinstance(self.meta, Mapping):
                raise ValidationError("meta", f"must be a dict of JSON values, got {type(self.meta).__name__}")
            self.meta = dict(self.meta)
        self.meta_json = check_json("meta", self.meta) if self.meta else "{}"
        if not isinstance(self.queue, str) or not self.queue.strip() or len(self.queue) > 128:
            raise ValidationError("queue", f"must be a non-empty name of at most 128 characters, got {self.queue!r}")
        if (problem := storable_text_error(self.queue)) is not None:
            raise ValidationError("queue", f"{problem}; got {self.queue!r}")
        if not isinstance(self.priority, int) or isinstance(self.priority, bool) or not 0 <= self.priority <= 9:
            raise ValidationError("priority", f"must be an integer from 0 (highest) to 9, got {self.priority!r}")
        if (
            not isinstance(self.max_attempts, int)
            or isinstance(self.max_attempts, bool)
            or not 1 <= self.max_attempts <= MAX_INT4
        ):
            raise ValidationError(
                "max_attempts", f"must be an integer >= 1 and at most {MAX_INT4} (2**31 - 1), got {self.max_attempts!r}"
            )
        if type(self.tags) is not list:
            if isinstance(self.tags, str) or not isinstance(self.tags, Iterable):
                raise ValidationError("tags", "must be a list of strings")
            self.tags = list(self.tags)
        for tag in self.tags:
            if not isinstance(tag, str):
                raise ValidationError("tags", f"must be a list of strings, got {self.tags!r:.200}")
            if (problem := storable_text_error(tag)) is not None:
                raise ValidationError("tags", f"the tag {tag!r:.80} {problem}")
        if self.schedule_in is not None:
            if (
                not isinstance(self.schedule_in, int | float)
                or isinstance(self.schedule_in, bool)
                or not 0 <= self.schedule_in <= MAX_DELAY  # False for NaN
            ):
                raise ValidationError(
                    "schedule_in",
                    f"must be a number of seconds from 0 to {MAX_DELAY:.0f} (100 years), got {self.schedule_in!r}; "
                    "use scheduled_at for a fixed date",
                )
            if self.scheduled_at is not None:
                raise ValidationError("schedule_in", "give either schedule_in or scheduled_at, not both")
        if self.scheduled_at is not None:
            if not isinstance(self.scheduled_at, datetime):
                raise ValidationError("scheduled_at", f"must be a datetime, got {type(self.scheduled_at).__name__}")
            if self.scheduled_at.utcoffset() is None:
                raise ValidationError(
                    "scheduled_at", "must be timezone-aware, e.g. datetime.now(UTC) + timedelta(minutes=5)"
                )
            try:
                self.scheduled_at.astimezone(UTC).timestamp()  # in UTC, what every engine stores
            except (OverflowError, ValueError, OSError):
                raise ValidationError(
                    "scheduled_at", f"is out of range once converted to UTC, got {self.scheduled_at!r}"
                ) from None
        if self.unique is not None and not isinstance(self.unique, Unique):
            self.unique = Unique.parse(self.unique)  # a dict or True given directly to JobSpec
        if self.chain_key is not None:
            check_text("chain_key", self.chain_key)

    @property
    def is_scheduled(self) -> bool:
        """Whether the job starts `scheduled` rather than `available`."""
        return self.scheduled_at is not None or bool(self.schedule_in)

    def unique_key(self) -> str | None:
        """The conflict key for unique jobs, or None."""
        if self.unique is None:
            return None
        meta = self.meta
        if self.chain_key is not None and CHAIN_POLICY_KEY in meta:
            # A chained job's policy is Baton's, not the caller's meta; left out, the key is
            # also that of a job inserted before the policy had its own key (0.1).
            meta = {k: v for k, v in meta.items() if k != CHAIN_POLICY_KEY}
        return self.unique.key_for(self.worker, self.queue, self.args, meta)


# --------------------------------------------------------------------------- usage


MAX_MODEL_NAME: Final = 200

# (model, input_tokens, output_tokens, extra) -> cost, given to a running job by its executor.
PriceFn = Callable[[str, int, int, dict[str, Any]], Decimal | None]


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One `job.record_usage(...)` call: what an LLM call (or any metered call) of an attempt
    used, and its cost under the app's pricing at the time (None when the model is unpriced)."""

    model: str
    input_tokens: int
    output_tokens: int
    extra: dict[str, Any]
    cost: Decimal | None


def _tokens(field_name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_BIGINT:
        raise ValidationError(
            field_name, f"must be a whole number of tokens from 0 to {MAX_BIGINT} (2**63 - 1), got {value!r:.80}"
        )
    return value


# --------------------------------------------------------------------------- Job

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def freeze(value: Any) -> Any:
    """A read-only deep copy of decoded JSON: mappings become MappingProxyType, lists tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


@dataclass(slots=True, eq=False)
class Job:
    """A job row as stored, plus what a running step can read (`upstream`) and write (`log`,
    `record_usage`)."""

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
    _graft: bool = False  # a graft step: its worker returns baton.Graft
    _parent: str | None = None  # for a grafted step, the graft step that grafted it
    _context: Mapping[str, Any] | None = None
    # Why this attempt was taken away while running (set by the node, read by the worker).
    _taken_away: str | None = None
    # `record_usage` calls of this attempt (None until the first: plain jobs carry nothing).
    _usage: list[UsageRecord] | None = None
    _price: PriceFn | None = None  # the app's pricing, set by the executor

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
        args, decode_error = _decode_args(row["args"])
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

    @classmethod
    def fetched(cls, row: Mapping[str, Any], node: str, uuid: str) -> Job:
        """Build a Job from a row `fetch_jobs` just moved to `executing` for producer `uuid`:
        the row carries only what the fetch did not set itself."""
        args, decode_error = _decode_args(row["args"])
        return cls(
            id=row["id"],
            state="executing",
            queue=row["queue"],
            worker=row["worker"],
            args=args,
            meta=_json_column(row["meta"]) or {},
            tags=_json_column(row["tags"]) or [],
            errors=_json_column(row["errors"]) or [],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            priority=row["priority"],
            inserted_at=to_datetime(row["inserted_at"]),
            scheduled_at=to_datetime(row["scheduled_at"]),
            attempted_at=to_datetime(row["attempted_at"]),
            attempted_by=[node, uuid],
            workflow_id=row["workflow_id"],
            chain_key=row["chain_key"],
            decode_error=decode_error,
        )

    # -- cancellation of the running attempt --------------------------------------------

    def cancelled(self) -> bool:
        """Whether this attempt was taken away while it runs: the job was cancelled, this node
        lost its lease and the attempt now belongs to the Lifeline's rescue, or this node is
        stopping and hands the attempt back to another node (docs/lease.md).
        An async worker is cancelled outright; a sync worker cannot be, so a long one should
        poll this (or `raise_if_cancelled()`) between steps and before its side effects."""
        return self._taken_away is not None

    def raise_if_cancelled(self) -> None:
        """Raise `baton.JobCancelled` if `cancelled()`: the executor then records nothing for
        this attempt (no retry, no error), since it is no longer this worker's to finish."""
        if self._taken_away is not None:
            raise JobCancelled(f"job {self.id} attempt {self.attempt} was taken away: {self._taken_away}")

    # -- what a running workflow step can do ------------------------------------------

    @property
    def context(self) -> Mapping[str, Any]:
        """The workflow's context (`Workflow(context=...)`), read-only; empty outside a
        workflow or when none was given."""
        return self._context if self._context is not None else _EMPTY

    def upstream(self, name: str) -> Any:
        """The recorded return value of dependency step `name` (None if it returned nothing).
        For a graft step, `{grafted_step_name: result}` of every step it grafted."""
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
        self._logs.append((level, storable(str(message))))

    def record_usage(self, *, model: str, input_tokens: int, output_tokens: int, **extra: Any) -> None:
        """Record what one call of this attempt used (an LLM call: its model and tokens; `extra`
        holds any other JSON values, e.g. `cached_tokens=`). Call it any number of times, from
        sync or async workers; the records are written with the attempt's ack, priced by the
        app's `pricing` now (cost None for an unpriced model). Bad values raise ValidationError."""
        check_text("model", model, what="a model name string")
        if not model.strip() or len(model) > MAX_MODEL_NAME:
            raise ValidationError("model", f"must be a non-empty name of at most {MAX_MODEL_NAME} characters")
        _tokens("input_tokens", input_tokens)
        _tokens("output_tokens", output_tokens)
        if extra:
            check_json("extra", extra)
        cost = self._price(model, input_tokens, output_tokens, extra) if self._price is not None else None
        record = UsageRecord(model, input_tokens, output_tokens, extra, cost)
        if self._usage is None:
            self._usage = [record]
        else:
            self._usage.append(record)
