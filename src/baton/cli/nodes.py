"""`baton migrate` and `baton worker`: prepare a database and run a node until a signal stops it."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import signal
import sys
from typing import Any

import click

from ..app import Baton
from ..errors import BatonError
from ..worker import FunctionWorker, Worker
from .base import (
    Settings,
    SetupFailure,
    check_ready,
    cli,
    console,
    database_options,
    describe,
    log,
    run,
)

# --------------------------------------------------------------------------- migrate


@cli.command()
@database_options
def migrate(settings: Settings) -> None:
    """Create or upgrade Baton's tables (idempotent, safe from several processes at once)."""

    async def go() -> tuple[list[int], int, str]:
        app = Baton(settings.url, schema=settings.schema, plugins=[], log_events=False)
        try:
            applied = await app.migrate()
            return applied, await app.engine.schema_version(), describe(app)
        finally:
            await app.close()

    applied, version, where = run(go())
    out = console()
    # One line each, never folded at the console's width: scripts read them (a long path and
    # thirteen migrations passed 80 columns when piped).
    if applied:
        out.print(
            f"applied migration{'s' if len(applied) > 1 else ''} {', '.join(map(str, applied))} to {where}: "
            f"schema version {version}",
            soft_wrap=True,
        )
    else:
        out.print(f"{where} is up to date (schema version {version})", soft_wrap=True)


# --------------------------------------------------------------------------- worker


class QueueLimits(click.ParamType):
    """`default:10,mailers:5` -> {"default": 10, "mailers": 5} (a name alone means 10)."""

    name = "NAME:LIMIT,..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict[str, int]:
        if isinstance(value, dict):
            return value
        limits: dict[str, int] = {}
        for item in str(value).split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, limit_text = item.partition(":")
            name = name.strip()
            if not name:
                self.fail(f"{item!r} has no queue name; write NAME:LIMIT, e.g. default:10", param, ctx)
            try:
                limit = int(limit_text) if sep else 10
            except ValueError:
                self.fail(f"the limit of queue {name!r} must be a whole number, got {limit_text!r}", param, ctx)
            if limit < 1:
                self.fail(f"the limit of queue {name!r} must be at least 1, got {limit}", param, ctx)
            if name in limits:
                self.fail(f"queue {name!r} is given twice", param, ctx)
            limits[name] = limit
        if not limits:
            self.fail("name at least one queue, e.g. default:10,mailers:5", param, ctx)
        return limits


def load_app(reference: str) -> Baton:
    """Import `module:attr` (from the current directory too) and return the Baton app it names;
    `attr` may also be a function taking no arguments that returns the app (an app factory).
    Anything else (a worker, a function needing arguments, a class) is a SetupFailure."""
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise SetupFailure(f"--app must look like module:attribute (e.g. myproject.jobs:app), got {reference!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise SetupFailure(
                f"cannot import module {module_name!r} (from {cwd}): {exc}; run baton from your project directory "
                "or add it to PYTHONPATH"
            ) from None
        raise
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise SetupFailure(f"module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if isinstance(target, Baton):
        return target
    if isinstance(target, FunctionWorker) or (inspect.isclass(target) and issubclass(target, Worker)):
        raise SetupFailure(
            f"{reference} is a worker, not a baton.Baton app: name the app it is registered on (e.g. {module_name}:app)"
        )
    # Only a function is a factory, and only one that takes no arguments: a class, a worker or
    # any other callable is named as what it is, never called to find out.
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        raise SetupFailure(f"{reference} is a {type(target).__name__}, not a baton.Baton app")
    try:
        inspect.signature(target).bind()
    except TypeError:
        raise SetupFailure(
            f"{reference} is a function that takes arguments, not a baton.Baton app "
            "(an app factory must take no arguments)"
        ) from None
    app = target()
    if not isinstance(app, Baton):
        raise SetupFailure(f"{reference}() returned a {type(app).__name__}, not a baton.Baton app")
    return app


def load_app_for(settings: Settings, app_ref: str) -> Baton:
    """`load_app(app_ref)` for a command: `--url` applies to an app built with `baton.Baton()`
    and no URL (BATON_DATABASE_URL is set before the app is imported); a failure to load it
    is a setup failure naming the reference."""
    if settings.url_given:
        os.environ["BATON_DATABASE_URL"] = settings.url
    try:
        return load_app(app_ref)
    except BatonError as exc:
        raise SetupFailure(f"{app_ref}: {exc}") from None


async def serve(app: Baton) -> int:
    """Run `app` as a node until SIGTERM or SIGINT, then stop gracefully; return the exit code.

    A second signal stops now: running jobs are cancelled and handed straight back to
    `available` instead of waiting out `shutdown_grace`."""
    loop = asyncio.get_running_loop()
    stopping, hurry = asyncio.Event(), asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) == 1:
            log.info(
                "%s received: stopping gracefully (running jobs get up to %gs); send it again to stop now",
                name,
                app.shutdown_grace,
            )
            stopping.set()
        else:
            log.warning("%s received again: stopping now", name)
            hurry.set()

    handled = (signal.SIGTERM, signal.SIGINT)
    for sig in handled:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        starting = asyncio.create_task(app.start())
        waiting = asyncio.create_task(stopping.wait())
        await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            # A signal while connecting (e.g. to a database that does not answer): give up.
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
            await app.close()
            return 128 + received[-1]
        if starting.exception() is not None:
            waiting.cancel()
            await app.close()
            starting.result()  # re-raise (MigrationError, DatabaseUnavailable, ...)
        await waiting
        stopping_task = asyncio.create_task(app.stop())
        hurried = asyncio.create_task(hurry.wait())
        await asyncio.wait({stopping_task, hurried}, return_when=asyncio.FIRST_COMPLETED)
        if not stopping_task.done():
            # A second signal: the stop in progress stops waiting and hands jobs back now.
            await app.stop()
        else:
            hurried.cancel()
        await stopping_task
        return 0 if len(received) < 2 else 128 + received[-1]
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


@cli.command()
@click.option(
    "--app",
    "app_ref",
    required=True,
    metavar="MODULE:ATTR",
    help="The Baton app to run, e.g. myproject.jobs:app, or a function taking no arguments that returns it.",
)
@click.option(
    "--queues",
    type=QueueLimits(),
    default=None,
    help="Queues and their concurrency, replacing the app's own: default:10,mailers:5.",
)
@click.option("--node", default=None, help="This node's name [default: the app's, else hostname-pid].")
@click.option(
    "--shutdown-grace",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="How long a graceful stop waits for running jobs [default: the app's, 15].",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
@database_options
def worker(
    settings: Settings,
    app_ref: str,
    queues: dict[str, int] | None,
    node: str | None,
    shutdown_grace: float | None,
    log_level: str,
) -> None:
    """Run a worker node: fetch and run jobs of the app's queues until SIGTERM or Ctrl-C.

    The first signal stops gracefully (stop fetching, wait for running jobs up to the shutdown
    grace, hand the rest back) and exits 0; a second one stops now. --url applies to apps built
    with `baton.Baton()` and no URL (it sets BATON_DATABASE_URL before the app is imported).
    """
    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    app = load_app_for(settings, app_ref)
    if settings.url_given and app.url != settings.url:
        raise SetupFailure(
            f"{app_ref} is configured with database {app.engine.display_url}, not {settings.url}: build it with "
            "baton.Baton() (no URL) so --url and BATON_DATABASE_URL apply, or drop --url"
        )
    app_schema = getattr(app.engine, "schema", "public")
    if settings.schema != "public" and settings.schema != app_schema:
        raise SetupFailure(f"{app_ref} uses schema {app_schema!r}, not {settings.schema!r}; set schema= on the app")
    if queues is not None:
        # --queues sets each queue's concurrency on this node; the limits across nodes the app
        # declares for a queue of the same name (global_limit, rate_limit) still hold.
        app.queues = {
            name: {"limit": limit, "paused": False}
            | ({"limits": app.queues[name]["limits"]} if "limits" in app.queues.get(name, {}) else {})
            for name, limit in queues.items()
        }
        # The pool was sized for the app's own queues; each producer may hold a connection.
        pool_size = getattr(app.engine, "pool_size", None)
        if isinstance(pool_size, int):
            app.engine.pool_size = max(pool_size, len(app.queues) + 4)  # type: ignore[attr-defined]
    if not app.queues:
        raise SetupFailure(f"{app_ref} has no queues: pass --queues default:10 or set queues= on the app")
    if node is not None:
        if not node.strip():
            raise SetupFailure("--node must be a non-empty name")
        app.node = node
    if shutdown_grace is not None:
        app.shutdown_grace = float(shutdown_grace)

    async def go() -> int:
        await check_ready(app)
        return await serve(app)

    code = run(go())
    if code:
        sys.exit(code)
