"""The plugin seam: options validated at construction, one `sweep` per interval on the leader,
and start/stop/exception telemetry around every sweep."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from .. import telemetry
from ..errors import ValidationError

if TYPE_CHECKING:
    from ..app import Baton

log = logging.getLogger("baton.plugins")


def positive(field: str, value: Any, *, allow_none: bool = False) -> float | None:
    """Validate a number of seconds > 0 (or None when allowed)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ValidationError(
            field, f"must be a number of seconds > 0{' or None' if allow_none else ''}, got {value!r}"
        )
    return float(value)


def count(field: str, value: Any) -> int:
    """Validate an integer >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValidationError(field, f"must be an integer >= 1, got {value!r}")
    return value


class Plugin:
    """Base class: subclasses set `name`, validate options in `__init__`, implement `_sweep`."""

    name: ClassVar[str] = "plugin"
    interval: float = 60.0

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = positive("interval", interval) or 60.0
        self.last_success: float | None = None
        self.last_error: str | None = None

    def validate(self, app: Baton) -> None:
        """Check options against the app at start (e.g. that workers exist); raise ValidationError."""

    async def sweep(self, app: Baton) -> dict[str, Any]:
        """Run one sweep now, with telemetry; returns the stop event's metadata."""
        meta = {"plugin": self.name, "node": app.node}
        telemetry.emit(("baton", "plugin", "start"), {"system_time": time.time()}, meta)
        started = time.perf_counter()
        try:
            result = await self._sweep(app)
        except Exception as exc:
            duration = (time.perf_counter() - started) * 1000
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("plugin %s sweep failed; the next interval runs normally", self.name)
            telemetry.emit(("baton", "plugin", "exception"), {"duration": duration}, {**meta, "error": self.last_error})
            raise
        duration = (time.perf_counter() - started) * 1000
        self.last_success = time.time()
        self.last_error = None
        telemetry.emit(("baton", "plugin", "stop"), {"duration": duration}, {**meta, **result})
        return result

    async def _sweep(self, app: Baton) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} interval={self.interval:g}s>"
