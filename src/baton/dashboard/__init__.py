"""Baton's web dashboard: `create_app(app, read_only=False, auth=None)` is an ASGI app to mount
under any prefix (FastAPI, Starlette, Django ASGI) or to run alone with `baton dashboard`.
Needs the `dashboard` extra: `pip install 'baton-jobs[dashboard]'`.

The package reads downhill: `app` holds the shared state and helpers, `routes` the pages and
the JSON API over it, and this module assembles them into one ASGI application."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from ..errors import ValidationError
from . import routes
from .app import Dashboard
from .security import Auth, Guard, check_auth

if TYPE_CHECKING:
    from ..app import Baton

__all__ = ["DashboardApp", "create_app"]


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
