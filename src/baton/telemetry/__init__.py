"""Telemetry: attach handlers to Baton's events (`attach`, `detach`, `emit`), plus bridges to
structured logging, OpenTelemetry and Prometheus. Every event is listed in docs/telemetry.md."""

from .events import Event, attach, attach_many, detach, emit, handlers, has_handlers, list_handlers

__all__ = ["Event", "attach", "attach_many", "detach", "emit", "handlers", "has_handlers", "list_handlers"]
