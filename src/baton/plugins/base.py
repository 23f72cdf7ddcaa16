"""The plugin seam: options validated at construction, one `sweep` per interval on the leader,
and start/stop/exception telemetry around every sweep."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar, Final

from .. import telemetry
from ..errors import ValidationError
from ..job import MAX_DELAY, MAX_INT4

if TYPE_CHECKING:
    from ..host import Host

log = logging.getLogger("baton.plugins")


# A statement timeout is sent to PostgreSQL in whole milliseconds, as an int4 > 0.
MIN_TIMEOUT: Final = 0.001
MAX_TIMEOUT: Final = (2**31 - 1) // 1000  # 2 147 483 s, about 24 days


def positive(field: str, value: Any, *, allow_none: bool = False, maximum: float = MAX_DELAY) -> float | None:
    """Validate a number of seconds > 0 and at most `maximum` (or None when allowed)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= maximum:  # False for NaN
        raise ValidationError(
            field,
            f"must be a number of seconds > 0 and at most {maximum:.0f}{' or None' if allow_none else ''}, "
            f"got {value!r:.80}",
        )
    return float(value)


def statement_timeout(field: str, value: Any, *, allow_none: bool = False) -> float | None:
    """Validate a per-statement timeout in seconds: from 1 ms to what PostgreSQL's
    statement_timeout holds (about 24 days), or None when allowed."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        raise ValidationError(
            field,
            f"must be a number of seconds from {MIN_TIMEOUT:g} to {MAX_TIMEOUT} (PostgreSQL's statement_timeout "
            f"limit){' or None' if allow_none else ''}, got {value!r:.80}",
        )
    return float(value)


def count(field: str, value: Any) -> int:
    """Validate an integer from 1 to 2**31 - 1."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_INT4:
        raise ValidationError(field, f"must be an integer from 1 to {MAX_INT4}, got {value!r:.80}")
    return value


def flag(field: str, value: Any) -> bool:
    """Validate a real bool ("false" or 1 would silently mean something else)."""
    if not isinstance(value, bool):
        raise ValidationError(field, f"must be True or False, got {value!r:.80}")
    return value


class Plugin:
    """Base class: subclasses set `name`, validate options in `__init__`, implement `_sweep`."""

    name: ClassVar[str] = "plugin"
    interval: float = 60.0

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = positive("interval", interval) or 60.0
        self.last_success: float | None = None
        self.last_error: str | None = None

    def validate(self, app: Host) -> None:
        """Check options against the app at start (e.g. that workers exist); raise ValidationError."""

    async def sweep(self, app: Host) -> dict[str, Any]:
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

    async def _sweep(self, app: Host) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} interval={self.interval:g}s>"
