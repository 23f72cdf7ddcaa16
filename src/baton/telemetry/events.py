"""Attach/detach/emit, in the manner of Erlang's :telemetry. Handlers run synchronously in the
emitting code; one that raises is detached and logged so it can never break a job."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

log = logging.getLogger("baton.telemetry")

Event = tuple[str, ...]

# The events the bridges listen to (docs/telemetry.md lists every event Baton emits).
JOB_START: Event = ("baton", "job", "start")
JOB_STOP: Event = ("baton", "job", "stop")
JOB_EXCEPTION: Event = ("baton", "job", "exception")
JOB_FENCED: Event = ("baton", "job", "fenced")
JOB_USAGE: Event = ("baton", "job", "usage")
WORKFLOW_FINISHED: Event = ("baton", "workflow", "finished")
WORKFLOW_FAILED: Event = ("baton", "workflow", "failed")
PLUGIN_STOP: Event = ("baton", "plugin", "stop")
PLUGIN_EXCEPTION: Event = ("baton", "plugin", "exception")
PLUGIN_RESCUED: Event = ("baton", "plugin", "rescued")
PLUGIN_PRUNED: Event = ("baton", "plugin", "pruned")
LEADER_ELECTED: Event = ("baton", "leader", "elected")
LEADER_LOST: Event = ("baton", "leader", "lost")
LEADER_RESIGNED: Event = ("baton", "leader", "resigned")
LEASE_LOST: Event = ("baton", "node", "lease_lost")
LEASE_REGAINED: Event = ("baton", "node", "lease_regained")
# How attempts, workflows and plugin sweeps ended: what the metrics and tracing bridges record.
OUTCOMES: tuple[Event, ...] = (
    JOB_STOP,
    JOB_EXCEPTION,
    JOB_FENCED,
    JOB_USAGE,
    WORKFLOW_FINISHED,
    WORKFLOW_FAILED,
    PLUGIN_STOP,
    PLUGIN_EXCEPTION,
    PLUGIN_RESCUED,
    PLUGIN_PRUNED,
)

Handler = Callable[[Event, Mapping[str, Any], Mapping[str, Any]], Any]

_lock = threading.Lock()
_by_id: dict[str, tuple[tuple[Event, ...], Handler]] = {}
_by_event: dict[Event, tuple[tuple[str, Handler], ...]] = {}


def _rebuild() -> None:
    table: dict[Event, list[tuple[str, Handler]]] = {}
    for handler_id, (events, fn) in _by_id.items():
        for event in events:
            table.setdefault(event, []).append((handler_id, fn))
    global _by_event
    _by_event = {event: tuple(items) for event, items in table.items()}


_EXAMPLE = "('baton', 'job', 'stop')"


def _event(value: Any) -> Event:
    """A tuple (or list) of at least one string; anything else is a ValueError saying why."""
    if isinstance(value, str):
        raise ValueError(
            f"an event is a tuple of strings, not the string {value!r}: write {tuple(value.split('.'))!r}"
            if "." in value
            else f"an event is a tuple of strings like {_EXAMPLE}, not the string {value!r}"
        )
    if not isinstance(value, tuple | list):
        raise ValueError(f"an event is a tuple of strings like {_EXAMPLE}, got {type(value).__name__} {value!r}")
    if not value:
        raise ValueError(
            f"an event is a non-empty tuple of strings like {_EXAMPLE}, got an empty {type(value).__name__}"
        )
    wrong = [part for part in value if not isinstance(part, str)]
    if wrong:
        raise ValueError(f"an event is a tuple of strings like {_EXAMPLE}, got {value!r} (not a string: {wrong[0]!r})")
    return tuple(value)


def attach(handler_id: str, event: Iterable[str], fn: Handler) -> None:
    """Call `fn(event, measurements, metadata)` for every `event`. Ids are unique."""
    attach_many(handler_id, [_event(event)], fn)


def attach_many(handler_id: str, events: Iterable[Iterable[str]], fn: Handler) -> None:
    """Attach one handler to several events (a list of event tuples) under one id."""
    if not callable(fn):
        raise ValueError(f"handler {handler_id!r} must be callable, got {type(fn).__name__} {fn!r}")
    if isinstance(events, tuple | list) and events and all(isinstance(part, str) for part in events):
        one = tuple(events)
        raise ValueError(
            f"attach_many takes a list of events, got one event {one!r}: "
            f"write attach_many({handler_id!r}, [{one!r}], fn) or attach({handler_id!r}, {one!r}, fn)"
        )
    if isinstance(events, str | bytes) or not isinstance(events, Iterable):
        raise ValueError(
            f"attach_many takes a list of events like [{_EXAMPLE}], got {type(events).__name__} {events!r}"
        )
    parsed = tuple(_event(e) for e in events)
    with _lock:
        if handler_id in _by_id:
            raise ValueError(f"a telemetry handler with id {handler_id!r} is already attached; detach it first")
        _by_id[handler_id] = (parsed, fn)
        _rebuild()


def detach(handler_id: str) -> bool:
    """Detach a handler; True if it was attached."""
    with _lock:
        found = _by_id.pop(handler_id, None) is not None
        if found:
            _rebuild()
        return found


def list_handlers() -> dict[str, tuple[Event, ...]]:
    """Attached handler ids and their events."""
    with _lock:
        return {hid: events for hid, (events, _) in _by_id.items()}


def has_handlers(event: Event) -> bool:
    """Whether anything listens to `event` (lets hot paths skip building metadata)."""
    return event in _by_event


def handlers(event: Event) -> tuple[tuple[str, Handler], ...]:
    """The (id, fn) pairs attached to `event`."""
    return _by_event.get(event, ())


def emit(event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
    """Call every handler of `event`; a raising handler is detached and logged."""
    for handler_id, fn in _by_event.get(event, ()):
        try:
            fn(event, measurements, metadata)
        except Exception:
            log.exception("telemetry handler %r raised on %s and was detached", handler_id, event)
            detach(handler_id)
