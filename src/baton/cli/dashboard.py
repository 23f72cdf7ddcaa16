"""`baton dashboard`: serve the web dashboard (uvicorn) on a database, standalone."""

from __future__ import annotations

import os

import click
from rich.markup import escape

from ..app import Baton
from ..errors import ValidationError
from .base import Settings, SetupFailure, check_ready, cli, console, database_options, describe, log, run
from .nodes import load_app_for


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8484, show_default=True)
@click.option("--read-only", is_flag=True, help="Hide every action; every POST answers 403.")
@click.option(
    "--basic-auth",
    metavar="USER:PASS",
    default=None,
    help="Require HTTP basic auth [default: $BATON_DASHBOARD_AUTH, else none].",
)
@click.option(
    "--app",
    "app_ref",
    metavar="MODULE:ATTR",
    default=None,
    help="Your Baton app, so its cron entries and queues show up (built with baton.Baton() and no URL, "
    "--url applies to it).",
)
@database_options
def dashboard(
    settings: Settings, host: str, port: int, read_only: bool, basic_auth: str | None, app_ref: str | None
) -> None:
    """Serve the web dashboard (pages, JSON API under /api/, live updates) until Ctrl-C."""
    try:
        import uvicorn

        from ..dashboard import create_app
    except ImportError as exc:
        raise SetupFailure(f"the dashboard needs its extra: pip install 'baton-jobs[dashboard]' ({exc})") from None
    auth = basic_auth if basic_auth is not None else os.environ.get("BATON_DASHBOARD_AUTH") or None
    if app_ref is not None:
        app = load_app_for(settings, app_ref)
    else:
        app = Baton(settings.url, schema=settings.schema, plugins=[], log_events=False)
    try:
        asgi = create_app(app, read_only=read_only, auth=auth)
    except ValidationError as exc:
        raise SetupFailure(f"--basic-auth / BATON_DASHBOARD_AUTH: {exc}") from None

    async def go() -> None:
        try:
            await check_ready(app)
            where = f"http://{host}:{port}/"
            notes = [n for n in ("read-only" if read_only else "", "basic auth" if auth else "") if n]
            console(stderr=True).print(
                f"Baton dashboard for {escape(describe(app))} on {where}" + (f" ({', '.join(notes)})" if notes else "")
            )
            if auth is None and host not in ("127.0.0.1", "localhost", "::1"):
                log.warning("the dashboard listens on %s without authentication: pass --basic-auth USER:PASS", host)
            config = uvicorn.Config(asgi, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
            await uvicorn.Server(config).serve()
        finally:
            await app.close()

    run(go())
