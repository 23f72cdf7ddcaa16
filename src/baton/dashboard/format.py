"""Jinja filters of the dashboard's templates: times (relative, with the absolute time in a
tooltip), counts (estimated and capped ones marked), JSON, durations and queue action paths."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup, escape

from .._printable import escape as escape_control

# Control characters shown escaped as the CLI shows them (`\x1b`), but for newline and tab, which
# HTML renders as white space (and `pre` blocks of JSON and tracebacks need).
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Bidi embeddings, overrides and isolates (and their terminators), and the directional marks.
BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
FSI, PDI = "\u2068", "\u2069"


def shown(value: Any) -> Any:
    """User text as the dashboard writes it (every `{{ ... }}` of a template, via the
    environment's finalize, and the graph's labels): control characters visibly escaped (ESC as
    `\x1b`), and text holding a bidi control set in an isolate (FSI ... PDI) so that an
    override (U+202E) cannot reverse the text after it. Markup and non-text pass as they are."""
    if not isinstance(value, str) or isinstance(value, Markup):
        return value
    text = CONTROL.sub(lambda m: escape_control(m.group()), value)
    return f"{FSI}{text}{PDI}" if BIDI.search(text) else text


def ago(value: Any, now: datetime | None = None) -> Markup:
    """`3 min ago` in a <time> element whose title is the UTC time."""
    if value is None:
        return Markup('<span class="muted">—</span>')
    if not isinstance(value, datetime):
        return Markup(escape(str(value)))
    now = now or datetime.now(UTC)
    seconds = (now - value).total_seconds()
    future = seconds < 0
    s = abs(seconds)
    if s < 1:
        text = "now"
    else:
        if s < 60:
            amount = f"{s:.0f}s"
        elif s < 3600:
            amount = f"{s / 60:.0f} min"
        elif s < 86400 * 2:
            amount = f"{s / 3600:.1f} h"
        else:
            amount = f"{s / 86400:.0f} d"
        text = f"in {amount}" if future else f"{amount} ago"
    stamp = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup(f'<time datetime="{escape(value.isoformat())}" title="{stamp}">{escape(text)}</time>')


def utc(value: Any) -> str:
    """An absolute UTC time."""
    if not isinstance(value, datetime):
        return "—" if value is None else str(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def num(value: Any) -> str:
    """12345 -> `12 345` (thin space groups)."""
    if value is None:
        return "—"
    return f"{int(value):,}".replace(",", "\u202f")


def count(queue: dict[str, Any], state: str, cap: int) -> Markup:
    """A (queue, state) count: exact, `≈ estimate`, or `cap+`."""
    n = queue["counts"].get(state, 0)
    if state in queue.get("estimated", ()):
        return Markup(f'<span class="estimate" title="estimated from a table sample">≈{num(n)}</span>')
    if state in queue.get("capped", ()):
        return Markup(f'<span class="estimate" title="counted up to {num(cap)}">{num(cap)}+</span>')
    if n == 0:
        return Markup('<span class="zero">0</span>')
    return Markup(num(n))


def pretty(value: Any) -> str:
    """JSON, indented."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def ms(value: Any) -> str:
    """Milliseconds as a short duration."""
    if value is None:
        return "—"
    v = float(value)
    if v < 1000:
        return f"{v:.0f} ms"
    if v < 60_000:
        return f"{v / 1000:.1f} s"
    return f"{v / 60_000:.1f} min"


def queue_url(name: str, action: str) -> str:
    """The path of a queue action (`/api/queues/NAME/ACTION`) with the whole name as one path
    segment, `/` included (Jinja's `urlencode` leaves it). Browsers and HTTP clients remove
    the dot segments `.` and `..` (escaped or not), so those two names go in `?queue=`."""
    if name in (".", ".."):
        return f"/api/queues/{action}?queue={quote(name, safe='')}"
    return f"/api/queues/{quote(name, safe='')}/{action}"


def register_filters(env: jinja2.Environment) -> None:
    """Install the filters on the templates' environment."""
    env.filters.update(ago=ago, utc=utc, num=num, pretty=pretty, ms=ms, shown=shown)
    env.finalize = shown
    env.globals.update(count=count, queue_url=queue_url)
