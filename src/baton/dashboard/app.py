"""The dashboard as one ASGI app: `create_app(app)` returns a Starlette application serving
the pages (`/`, `/jobs`, `/workflows`, ...), the JSON API under `/api/`, live updates on
`/events` and its own static files. Mount it under any prefix or run it alone (`baton
dashboard`)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from .. import read
from ..engines.base import Conn
from ..errors import ValidationError
from ..job import MAX_BIGINT, STATES, TERMINAL_STATES
from ..read.jobs import JobFilter
from ..store import maintenance
from .format import register_filters
from .live import Broadcaster
from .security import Auth, Guard, check_auth, csrf_token, set_csrf_cookie

if TYPE_CHECKING:
    from ..app import Baton

READ_TIMEOUT = 5.0
"""Seconds a dashboard query may run before it is cancelled (a guardrail, not a target)."""
BULK_MAX = 100_000
"""Most jobs one bulk action changes (click again for more)."""
BULK_CHUNK = 1_000
WORKFLOW_STATUSES = ("running", "completed", "failed")
OVERVIEW_TTL = 1.0


class BadRequest(ValidationError):
    """A query parameter that cannot be used; answered with 400 naming the parameter."""


def _text(params: Mapping[str, Any], name: str, limit: int = 500) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise BadRequest(name, f"must be text of at most {limit} characters")
    return value


def _int(params: Mapping[str, Any], name: str, default: int | None, low: int = 1, high: int = MAX_BIGINT) -> int | None:
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
    """The jobs filter from query parameters (state, queue, worker, tag, q)."""
    state = _text(params, "state")
    if state is not None and state not in STATES:
        raise BadRequest("state", f"unknown state {state!r}; choose from {', '.join(STATES)}")
    return JobFilter(
        state=state,
        queue=_text(params, "queue", 128),
        worker=_text(params, "worker"),
        tag=_text(params, "tag"),
        q=_text(params, "q", 200),
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


async def _overview(
    conn: Conn, extra_queues: list[str], closed: dict[datetime, int], stale_after: float
) -> dict[str, Any]:
    """Everything the overview shows, in one transaction. `closed` caches the counts of minutes
    that are over, so a refresh counts only the current minute's completions."""
    now = await maintenance.db_now(conn)
    counts = await read.queue_counts(conn, extra_queues)
    minute = now.replace(second=0, microsecond=0)
    first = minute - timedelta(minutes=59)
    settled = minute - timedelta(minutes=1)  # late acks may still land in the previous minute
    missing = [first + timedelta(minutes=i) for i in range(60) if first + timedelta(minutes=i) not in closed]
    since = missing[0] if missing else settled
    fresh = await read.throughput(conn, since, minute + timedelta(minutes=1))
    buckets = []
    for i in range(60):
        m = first + timedelta(minutes=i)
        if m in closed:
            buckets.append((m, closed[m]))
            continue
        value = fresh.get(m, 0)
        if m < settled:
            closed[m] = value
        buckets.append((m, value))
    for old in [m for m in closed if m < first]:
        del closed[old]
    return {
        "now": now,
        **counts,
        "throughput": [{"minute": m, "completed": n} for m, n in buckets],
        "nodes": await read.nodes(conn, stale_after),
        "leader": await read.leader(conn),
    }


def _queue_rows(overview: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Queues with their counts and, from the producers, each node's limit/running/paused."""
    producers: dict[str, list[dict[str, Any]]] = {}
    for node in overview["nodes"]:
        for p in node["producers"]:
            if not p["drain"]:
                producers.setdefault(p["queue"], []).append({**p, "node": node["node"]})
    rows = []
    for q in overview["queues"]:
        ps = producers.get(q["queue"], [])
        rows.append(
            {
                **q,
                "producers": ps,
                "paused": bool(ps) and all(p["paused"] for p in ps if not p["stale"]),
                "running": sum(int(p["running"] or 0) for p in ps if not p["stale"]),
                "limit": sum(int(p["limit"] or 0) for p in ps if not p["stale"]),
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
        self._overview: tuple[float, dict[str, Any]] | None = None
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

    async def overview(self) -> dict[str, Any]:
        """Counts, throughput, nodes and leader; computed at most once per second, however
        many pages and tabs ask."""
        now = time.monotonic()
        if self._overview is not None and now - self._overview[0] < OVERVIEW_TTL:
            return self._overview[1]
        extra = sorted(self.app.queues)
        data = await self.read(_overview, extra, self.closed_minutes, self.app.stale_after)
        self._overview = (time.monotonic(), data)
        return data

    def invalidate(self) -> None:
        """Forget cached reads (after an action)."""
        self._overview = None

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


def create_app(
    app: Baton,
    read_only: bool = False,
    auth: Auth = None,
    *,
    title: str = "Baton",
    poll_interval: float = 1.0,
) -> DashboardApp:
    """The dashboard of `app` as an ASGI application.

    - `read_only=True`: pages hide every action and every POST answers 403.
    - `auth`: None (open), `"USER:PASS"` or `(user, password)` for HTTP basic auth, or a
      callable `auth(request) -> bool` (may be async) deciding per request; 401 otherwise.
    - `poll_interval`: seconds between change polls while a browser is watching (it doubles
      while the database is slow).

    Mount it under any prefix: `Mount("/baton", app=create_app(app))` in Starlette or FastAPI
    (`fastapi_app.mount("/baton", create_app(app))`), or route to it from Django's ASGI app.
    """
    from ..app import Baton

    if not isinstance(app, Baton):
        raise ValidationError("app", f"must be a baton.Baton, got {type(app).__name__}")
    if not isinstance(read_only, bool):
        raise ValidationError("read_only", f"must be True or False, got {read_only!r:.40}")
    auth = check_auth(auth)
    if not isinstance(poll_interval, int | float) or isinstance(poll_interval, bool) or not 0.05 <= poll_interval <= 60:
        raise ValidationError("poll_interval", f"must be from 0.05 to 60 seconds, got {poll_interval!r:.40}")
    dash = Dashboard(app, read_only, title, float(poll_interval))
    from . import routes

    static = StaticFiles(directory=str(resources.files("baton.dashboard") / "static"))
    starlette = Starlette(
        routes=[*routes.api_routes(dash), *routes.page_routes(dash), Mount("/static", app=static, name="static")],
        exception_handlers={404: routes.not_found(dash)},
    )
    starlette.state.dashboard = dash
    wrapped = Guard(starlette, auth, read_only)
    return DashboardApp(wrapped, dash)


class DashboardApp:
    """The dashboard's ASGI application; `.dashboard` is its shared state (tests, benchmarks)."""

    def __init__(self, inner: Any, dash: Dashboard) -> None:
        self._inner = inner
        self.dashboard = dash

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            # Mounted apps never see the lifespan; alone, acknowledge it and close on shutdown.
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.dashboard.broadcaster.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await self._inner(scope, receive, send)
