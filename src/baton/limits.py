"""Queue limits held across nodes (SPEC 9.3): `global_limit` (jobs of a queue executing on all
nodes at once) and `rate_limit` (starts per sliding window), each optionally per partition.
This module parses and validates the options and decides which limits a queue obeys when
nodes publish different ones; the database enforces them in the fetch (store/limits.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ValidationError
from .job import MAX_DELAY, MAX_INT4

PARTITION_FIELDS = ("worker", "args")
MAX_KEYS = 4  # the partition key is one SQL expression the planner can inline (migration 004)


@dataclass(frozen=True, slots=True)
class Partition:
    """What a limit counts separately: by worker name, by the values of some args, or both.
    `args` without `keys` partitions by the whole args."""

    fields: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"fields": list(self.fields), "keys": list(self.keys)}


@dataclass(frozen=True, slots=True)
class GlobalLimit:
    """At most `allowed` jobs of the queue executing across all nodes (per partition)."""

    allowed: int
    partition: Partition | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"allowed": self.allowed}
        if self.partition is not None:
            out["partition"] = self.partition.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `allowed` starts in any sliding window of `period` seconds (per partition)."""

    allowed: int
    period: float
    partition: Partition | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"allowed": self.allowed, "period": self.period}
        if self.partition is not None:
            out["partition"] = self.partition.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """The limits one queue obeys across nodes; `set_at` (epoch seconds) orders competing
    settings: when live nodes publish different limits, the newest setting wins everywhere."""

    global_limit: GlobalLimit | None = None
    rate_limit: RateLimit | None = None
    set_at: float = field(default=0.0, compare=False)

    def __bool__(self) -> bool:
        return self.global_limit is not None or self.rate_limit is not None

    def meta(self) -> dict[str, Any]:
        """The keys a producer publishes in its `baton_producers.meta`."""
        return {
            "global_limit": None if self.global_limit is None else self.global_limit.to_dict(),
            "rate_limit": None if self.rate_limit is None else self.rate_limit.to_dict(),
            "limits_set_at": self.set_at,
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> QueueLimits:
        """The limits a producer row publishes (rows of older Baton versions publish none)."""
        g, r = meta.get("global_limit"), meta.get("rate_limit")
        try:
            return cls(
                None if g is None else parse_global_limit("global_limit", g),
                None if r is None else parse_rate_limit("rate_limit", r),
                float(meta.get("limits_set_at") or 0.0),
            )
        except ValidationError:
            return cls()

    def params(self) -> dict[str, Any]:
        """The parameters of the limited fetch statements."""
        g, r = self.global_limit, self.rate_limit
        gp = g.partition if g is not None else None
        rp = r.partition if r is not None else None
        return {
            "global_allowed": None if g is None else g.allowed,
            "global_fields": list(gp.fields) if gp else [],
            "global_keys": list(gp.keys) if gp else [],
            "rate_allowed": None if r is None else r.allowed,
            "rate_period": None if r is None else r.period,
            "rate_fields": list(rp.fields) if rp else [],
            "rate_keys": list(rp.keys) if rp else [],
        }

    @property
    def partitioned(self) -> bool:
        return any(lim is not None and lim.partition is not None for lim in (self.global_limit, self.rate_limit))


def _allowed(field_name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_INT4:
        raise ValidationError(field_name, f"must be an integer from 1 to {MAX_INT4}, got {value!r:.80}")
    return value


def parse_partition(field_name: str, value: Any) -> Partition:
    """`{"fields": ["worker", "args"], "keys": ["tenant"]}` -> Partition."""
    if not isinstance(value, Mapping):
        raise ValidationError(
            field_name, f"must be a dict like {{'fields': ['args'], 'keys': ['tenant']}}, got {value!r:.80}"
        )
    unknown = set(value) - {"fields", "keys"}
    if unknown:
        raise ValidationError(field_name, f"unknown option(s) {sorted(unknown, key=repr)}; use fields and keys")
    fields, keys = value.get("fields", ()), value.get("keys", ())
    for name, items in (("fields", fields), ("keys", keys)):
        if isinstance(items, str | bytes) or not isinstance(items, Iterable):
            raise ValidationError(f"{field_name}.{name}", f"must be a list of strings, got {items!r:.80}")
    fields, keys = tuple(fields), tuple(keys)
    bad = [f for f in fields if f not in PARTITION_FIELDS]
    if bad:
        raise ValidationError(
            f"{field_name}.fields", f"unknown partition field(s) {bad!r:.120}; choose from {list(PARTITION_FIELDS)}"
        )
    if not fields:
        raise ValidationError(f"{field_name}.fields", "must name at least one of 'worker' and 'args'")
    if len(set(fields)) != len(fields):
        raise ValidationError(f"{field_name}.fields", f"lists a field twice: {list(fields)}")
    if any(not isinstance(k, str) or not k or len(k) > 256 for k in keys):
        raise ValidationError(f"{field_name}.keys", f"must be non-empty arg names, got {list(keys)!r:.120}")
    if keys and "args" not in fields:
        raise ValidationError(f"{field_name}.keys", "keys name args: add 'args' to fields (or drop keys)")
    if len(keys) > MAX_KEYS:
        raise ValidationError(f"{field_name}.keys", f"at most {MAX_KEYS} keys, got {list(keys)!r:.120}")
    if len(set(keys)) != len(keys):
        raise ValidationError(f"{field_name}.keys", f"lists a key twice: {list(keys)}")
    return Partition(tuple(f for f in PARTITION_FIELDS if f in fields), keys)


def parse_global_limit(field_name: str, value: Any) -> GlobalLimit:
    """`5` or `{"allowed": 2, "partition": {...}}` -> GlobalLimit."""
    if isinstance(value, Mapping):
        unknown = set(value) - {"allowed", "partition"}
        if unknown:
            raise ValidationError(
                field_name, f"unknown option(s) {sorted(unknown, key=repr)}; use allowed and partition"
            )
        if "allowed" not in value:
            raise ValidationError(f"{field_name}.allowed", "is required, e.g. {'allowed': 2, 'partition': {...}}")
        partition = value.get("partition")
        return GlobalLimit(
            _allowed(f"{field_name}.allowed", value["allowed"]),
            None if partition is None else parse_partition(f"{field_name}.partition", partition),
        )
    return GlobalLimit(_allowed(field_name, value))


def parse_rate_limit(field_name: str, value: Any) -> RateLimit:
    """`{"allowed": 60, "period": 60, "partition": {...}}` -> RateLimit."""
    if not isinstance(value, Mapping):
        raise ValidationError(field_name, f"must be a dict like {{'allowed': 60, 'period': 60}}, got {value!r:.80}")
    unknown = set(value) - {"allowed", "period", "partition"}
    if unknown:
        raise ValidationError(
            field_name, f"unknown option(s) {sorted(unknown, key=repr)}; use allowed, period and partition"
        )
    for required in ("allowed", "period"):
        if required not in value:
            raise ValidationError(f"{field_name}.{required}", "is required, e.g. {'allowed': 60, 'period': 60}")
    period = value["period"]
    if not isinstance(period, int | float) or isinstance(period, bool) or not 0.001 <= period <= MAX_DELAY:
        raise ValidationError(
            f"{field_name}.period", f"must be a number of seconds from 0.001 to {MAX_DELAY:.0f}, got {period!r:.80}"
        )
    partition = value.get("partition")
    return RateLimit(
        _allowed(f"{field_name}.allowed", value["allowed"]),
        float(period),
        None if partition is None else parse_partition(f"{field_name}.partition", partition),
    )


def effective(rows: Iterable[Mapping[str, Any]]) -> QueueLimits:
    """The limits a queue obeys, given the `meta` of its live producers: the newest setting
    (a node started with other limits, or `scale_queue`), so every node applies the same."""
    best: tuple[float, str] | None = None
    chosen = QueueLimits()
    for row in rows:
        meta = row.get("meta") or {}
        if "limits_set_at" not in meta:
            continue  # a producer of an older Baton, or a drain
        order = (float(meta.get("limits_set_at") or 0.0), str(row.get("uuid", "")))
        if best is None or order > best:
            best, chosen = order, QueueLimits.from_meta(meta)
    return chosen
