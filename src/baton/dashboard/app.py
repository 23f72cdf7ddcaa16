"""The dashboard as one ASGI app: `create_app(app)` returns a Starlette application serving
the pages (`/`, `/jobs`, `/workflows`, ...), the JSON API under `/api/`, live updates on
`/events` and its own static files. Mount it under any prefix or run it alone (`baton
dashboard`)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from .. import read
from ..engines.base import Conn
from ..errors import ValidationError
from ..job import MAX_BIGINT, STATES, TERMINAL_STATES
from ..read.jobs import JobFilter
from ..store import maintenance
from ..store import usage as usagestore
from .format import register_filters
from .live import Broadcaster
from .security import csrf_token, set_csrf_cookie

if TYPE_CHECKING:
    from ..app import Baton

READ_TIMEOUT = 5.0
"""Seconds a dashboard query may run before it is cancelled (a guardrail, not a target)."""
BULK_MAX = 100_000
"""Most jobs one bulk action changes (click again for more)."""
BULK_CHUNK = 1_000
WORKFLOW_STATUSES = ("running", "completed", "failed")
COUNTS_TTL = 1.0
USAGE_SINCE = timedelta(hours=24)
"""How far back the overview sums usage and cost by model."""
MINUTES_PER_REQUEST = 15
"""Past minutes of the throughput chart a request counts at most (the rest come with later refreshes)."""


class BadRequest(ValidationError):
    """A query parameter that cannot be used; answered with 400 naming the parameter."""


def text_param(params: Mapping[str, Any], name: str, limit: int = 500) -> str | None:
    """A text parameter of at most `limit` characters, or None when absent or empty."""
    value = params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise BadRequest(name, f"must be text of at most {limit} characters")
    return value


def int_param(
    params: Mapping[str, Any], name: str, default: int | None, low: int = 1, high: int = MAX_BIGINT
) -> int | None:
    """An integer parameter from `low` to `high`, or `default` when absent."""
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadRequest(name, f"must be an integer, got {str(value)[:40]!r}") from None
    if not low <= number <= high:
        raise BadRequest(name, f"must be from {low} to {high}, got {number}")
    return number


def job_filter(params: Mapping[str, Any]) -> JobFilter:
    """The jobs filter from query parameters (state, queue, worker, tag, q, workflow)."""
    state = text_param(params, "state")
    if state is not None and state not in STATES:
        raise BadRequest("state", f"unknown state {state!r}; choose from {', '.join(STATES)}")
    return JobFilter(
        state=state,
        queue=text_param(params, "queue", 128),
        worker=text_param(params, "worker"),
        tag=text_param(params, "tag"),
        q=text_param(params, "q", 200),
        workflow=text_param(params, "workflow"),
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


class JSON(JSONResponse):
    """JSON with datetimes as ISO 8601."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=_json_default, ensure_ascii=False, separators=(",", ":")).encode()


async def _throughput(conn: Conn, closed: dict[datetime, int]) -> dict[str, Any]:
    """Completions per minute over the last hour. `closed` caches the counts of minutes that
    are over, so a refresh counts only the current minute's completions."""
    now = await maintenance.db_now(conn)
    minute = now.replace(second=0, microsecond=0)
    first = minute - timedelta(minutes=59)
    settled = minute - timedelta(minutes=1)  # late acks may still land in the previous minute
    # Newest minutes first, at most MINUTES_PER_REQUEST of them: a cold start (a busy hour
    # to count) is spread over the first few refreshes instead of one slow page.
    missing = [first + timedelta(minutes=i) for i in range(59, -1, -1) if first + timedelta(minutes=i) not in closed]
    counting = missing[:MINUTES_PER_REQUEST]
    since = min([*counting, settled])
    fresh = await read.throughput(conn, since, minute + timedelta(minutes=1))
    buckets: list[tuple[datetime, int | None]] = []
    for i in range(60):
        m = first + timedelta(minutes=i)
        if m in closed:
            buckets.append((m, closed[m]))
        elif m >= since:
            if m < settled:
                closed[m] = fresh.get(m, 0)
            buckets.append((m, fresh.get(m, 0)))
        else:
            buckets.append((m, None))  # not counted yet
    for old in [m for m in closed if m < first]:
        del closed[old]
    return {"now": now, "throughput": [{"minute": m, "completed": n} for m, n in buckets]}


async def _queue_counts(conn: Conn, own: list[str], stale_after: float) -> dict[str, Any]:
    """Jobs by queue and state, listing as well the queues without jobs that this app declares
    or a live node runs (`baton dashboard` builds an app without queues)."""
    nodes = await read.nodes(conn, stale_after)
    live = {p["queue"] for node in nodes for p in node["producers"] if not p["stale"] and not p["drain"]}
    return await read.queue_counts(conn, sorted({*own, *live}))


async def _cluster(conn: Conn, stale_after: float) -> dict[str, Any]:
    """The nodes with their producers, and the leader."""
    return {"nodes": await read.nodes(conn, stale_after), "leader": await read.leader(conn)}


def plain(value: Any) -> Any:
    """Usage data as JSON-ready values: dataclasses as dicts, Decimal as a string (exact)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    return value


def _partition(limit: Mapping[str, Any]) -> str:
    p = limit.get("partition")
    if not p:
        return ""
    return " per " + " ".join([*p.get("fields", ()), *p.get("keys", ())])


def limit_lines(usage: Mapping[str, Any] | None) -> list[str]:
    """A queue's usage against its limits across nodes, one line per limit, e.g. `3 / 5
    executing across nodes`, `41 / 50 starts per 60 s`; for a partitioned limit the busiest
    partition."""
    if not usage:
        return []
    lines = []
    g, r = usage.get("global_limit"), usage.get("rate_limit")
    if g:
        if g.get("partition"):
            busiest = next(iter((usage.get("executing_by_partition") or {}).items()), None)
            top = f"busiest {busiest[0]}: {busiest[1]}" if busiest else "busiest: 0"
            lines.append(f"{top} / {g['allowed']} executing{_partition(g)} ({usage.get('executing', 0)} in all)")
        else:
            lines.append(f"{usage.get('executing', 0)} / {g['allowed']} executing across nodes")
    if r:
        period = f"{float(r['period']):g} s"
        if r.get("partition"):
            busiest = next(iter((usage.get("window_by_partition") or {}).items()), None)
            top = f"busiest {busiest[0]}: {busiest[1]}" if busiest else "busiest: 0"
            lines.append(f"{top} / {r['allowed']} starts per {period}{_partition(r)} ({usage.get('window', 0)} in all)")
        else:
            lines.append(f"{usage.get('window', 0)} / {r['allowed']} starts per {period}")
    return lines


def queue_rows(overview: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Queues with their counts and, from the producers, each node's limit/running/paused; with
    `queue_usage` in `overview` also the limits across nodes and their usage (`limits`,
    `limit_lines`)."""
    producers: dict[str, list[dict[str, Any]]] = {}
    for node in overview["nodes"]:
        for p in node["producers"]:
            if not p["drain"]:
                producers.setdefault(p["queue"], []).append({**p, "node": node["node"]})
    rows = []
    usage = overview.get("queue_usage") or {}
    for q in overview["queues"]:
        ps = producers.get(q["queue"], [])
        limits = usage.get(q["queue"])
        if limits is not None:
            limits = {k: v for k, v in limits.items() if k != "nodes"}
        rows.append(
            {
                **q,
                "producers": ps,
                "paused": bool(ps) and all(p["paused"] for p in ps if not p["stale"]),
                "running": sum(int(p["running"] or 0) for p in ps if not p["stale"]),
                "limit": sum(int(p["limit"] or 0) for p in ps if not p["stale"]),
                "limits": limits,
                "limit_lines": limit_lines(limits),
            }
        )
    return rows


class Dashboard:
    """The state one dashboard process shares between its requests."""

    def __init__(self, app: Baton, read_only: bool, title: str, poll_interval: float) -> None:
        self.app = app
        self.read_only = read_only
        self.title = title
        self.broadcaster = Broadcaster(app, interval=poll_interval)
        self.closed_minutes: dict[datetime, int] = {}
        self._counts: tuple[float, dict[str, Any]] | None = None
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("baton.dashboard", "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        register_filters(env)
        self.env = env

    async def read(self, op: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """Run a read op under the dashboard's statement timeout."""
        return await self.app.engine.run(read.bounded, READ_TIMEOUT, op, *args, **kwargs)

    def cron_plugin(self) -> Any:
        from ..plugins.cron import Cron

        return next((p for p in self.app.plugins if isinstance(p, Cron)), None)

    # -- data, shared by the JSON API and the pages ---------------------------------------

    async def counts(self) -> dict[str, Any]:
        """Jobs by queue and state (queues of live nodes included, jobs or not); counted at
        most once per second, however many pages and tabs ask."""
        now = time.monotonic()
        if self._counts is not None and now - self._counts[0] < COUNTS_TTL:
            return self._counts[1]
        data = await self.read(_queue_counts, sorted(self.app.queues), self.app.stale_after)
        self._counts = (time.monotonic(), data)
        return data

    async def cluster(self) -> dict[str, Any]:
        """Nodes (with their producers) and the leader."""
        return await self.read(_cluster, self.app.stale_after)  # type: ignore[no-any-return]

    async def overview(self) -> dict[str, Any]:
        """Counts, throughput, nodes and leader, queue limits, and usage by model (last 24 h)."""
        counts = await self.counts()
        return {
            **counts,
            **await self.read(_throughput, self.closed_minutes),
            **await self.cluster(),
            "queue_usage": await self.queue_usage(),
            "usage_by_model": await self.usage_by_model(),
        }

    async def queue_usage(self) -> dict[str, dict[str, Any]]:
        """Per queue a live node runs: its limits across nodes and their current usage."""
        return await self.app.queue_usage()

    async def usage_by_model(self) -> dict[str, Any]:
        """Tokens and cost by model over the last `USAGE_SINCE` (Decimal as text)."""
        totals = await self.read(usagestore.usage_by_model, datetime.now(UTC) - USAGE_SINCE)
        return {model: plain(t) for model, t in sorted(totals.items())}

    async def workflow_usage(self, workflow_id: str) -> dict[str, Any] | None:
        """A workflow's tokens and cost, in total, by step and by model; None when it recorded none."""
        usage = await self.read(usagestore.workflow_usage, workflow_id)
        if usage is None or not usage.calls:
            return None
        return plain(usage)  # type: ignore[no-any-return]

    def invalidate(self) -> None:
        """Forget cached reads (after an action)."""
        self._counts = None

    async def cron(self) -> dict[str, Any]:
        slots = await self.read(read.cron_slots)
        now = await self.read(maintenance.db_now)
        plugin = self.cron_plugin()
        return {
            "now": now,
            "configured": plugin is not None,
            "timezone": getattr(plugin, "timezone", None),
            "entries": read.cron_entries(plugin, slots, now),
        }

    # -- rendering ------------------------------------------------------------------------

    def render(self, request: Request, template: str, http_status: int = 200, **context: Any) -> HTMLResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        html = self.env.get_template(template).render(
            request=request,
            base=base,
            read_only=self.read_only,
            csrf=csrf_token(request),
            title=self.title,
            db=self.app.engine.display_url,
            path=request.url.path,
            query=dict(request.query_params),
            states=STATES,
            terminal=TERMINAL_STATES,
            **context,
        )
        response = HTMLResponse(html, status_code=http_status)
        set_csrf_cookie(request, response)
        return response
