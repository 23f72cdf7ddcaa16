"""`baton dashboard`: serve the web dashboard (uvicorn) on a database, standalone."""

from __future__ import annotations

import errno
import os
import socket

import click

from ..app import Baton
from ..errors import ValidationError
from .base import Failure, Settings, SetupFailure, check_ready, cli, console, database_options, describe, log, run
from .nodes import load_app_for


def listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address `host` resolves to (as uvicorn would open them), so
    a port in use is a one-line Failure (exit 1) before the dashboard claims to serve, not
    uvicorn's log line and its exit code 3."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise Failure(f"cannot serve the dashboard on {where}: {exc.strerror}; check --host") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            if os.name != "nt":  # as asyncio: rebind at once after a restart (Windows would share the port)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(2048)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            fix = "another program listens there; pick a free port with --port"
        elif exc.errno == errno.EACCES:
            fix = "permission denied (ports below 1024 need privileges); pick another port with --port"
        else:
            fix = f"{exc.strerror or exc}; check --host and --port"
        raise Failure(f"cannot serve the dashboard on {where}: {fix}") from None
    return sockets


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
        sockets: list[socket.socket] = []
        try:
            await check_ready(app)
            sockets = listen(host, port)
            where = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
            notes = [n for n in ("read-only" if read_only else "", "basic auth" if auth else "") if n]
            console(stderr=True).print(
                f"Baton dashboard for {describe(app)} on {where}" + (f" ({', '.join(notes)})" if notes else "")
            )
            if auth is None and host not in ("127.0.0.1", "localhost", "::1"):
                log.warning("the dashboard listens on %s without authentication: pass --basic-auth USER:PASS", host)
            config = uvicorn.Config(asgi, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
            await uvicorn.Server(config).serve(sockets=sockets)
        finally:
            for sock in sockets:
                sock.close()
            await app.close()

    run(go())
