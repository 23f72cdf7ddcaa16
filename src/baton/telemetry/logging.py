"""The structured-logging bridge, attached by default: one line per job end (INFO for success,
WARNING for failures), plus plugin failures, fenced acks, leader changes and workflow endings.
Each record carries the fields in `record.baton` for JSON formatters."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .events import Event, attach_many, detach, list_handlers

HANDLER_ID = "baton-default-logger"
EVENTS: tuple[Event, ...] = (
    ("baton", "job", "stop"),
    ("baton", "job", "exception"),
    ("baton", "job", "fenced"),
    ("baton", "plugin", "exception"),
    ("baton", "plugin", "rescued"),
    ("baton", "workflow", "finished"),
    ("baton", "workflow", "failed"),
    ("baton", "leader", "elected"),
    ("baton", "leader", "lost"),
)

job_log = logging.getLogger("baton.jobs")
event_log = logging.getLogger("baton.events")


def _fields(event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {"event": ".".join(event[1:])}
    job = metadata.get("job")
    if job is not None:
        fields.update(id=job.id, worker=job.worker, queue=job.queue, attempt=job.attempt)
    for key, value in metadata.items():
        if key not in ("job", "traceback") and isinstance(value, str | int | float | bool | type(None)):
            fields[key] = value
    for key, value in measurements.items():
        fields[key] = round(value, 3) if isinstance(value, float) else value
    return fields


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if char == " " or char.isprintable():
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def format_value(value: Any) -> str:
    """One value as logfmt writes it: bare when it is a plain word, else in double quotes with
    `\\`, `"` and every non-printable character (newlines, ESC, DEL, C1 controls, Unicode
    line separators, ...) backslash-escaped, so a value can never end the line or forge a field."""
    text = str(value)
    if text and all(c.isprintable() and c not in ' ="' for c in text):
        return text
    return '"' + "".join(_escape_char(c) for c in text) + '"'


def format_line(fields: Mapping[str, Any]) -> str:
    """The fields as one `key=value` line (keys escaped as values are, should one need it)."""
    return " ".join(f"{format_value(k)}={format_value(v)}" for k, v in fields.items())


def handle(event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
    """Log one event as a single `key=value` line (values quoted and escaped as logfmt does);
    `record.baton` keeps the raw values."""
    kind = event[1]
    if kind == "job" and event[2] == "stop":
        level = logging.INFO
        logger = job_log
    elif kind == "job":
        level = logging.WARNING
        logger = job_log
    elif kind == "workflow" and event[2] == "finished" and metadata.get("status") == "completed":
        level, logger = logging.INFO, event_log
    else:
        level, logger = (
            logging.WARNING if event[2] in ("exception", "failed", "fenced", "lost") else logging.INFO,
            event_log,
        )
    if not logger.isEnabledFor(level):
        return
    fields = _fields(event, measurements, metadata)
    logger.log(level, format_line(fields), extra={"baton": fields})


def attach_default_logger() -> None:
    """Attach the logging bridge once per process (idempotent)."""
    if HANDLER_ID not in list_handlers():
        try:
            attach_many(HANDLER_ID, EVENTS, handle)
        except ValueError:
            pass


def detach_default_logger() -> None:
    """Remove the logging bridge."""
    detach(HANDLER_ID)
