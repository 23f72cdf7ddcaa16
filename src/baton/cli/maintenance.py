"""`baton prune` and `baton demo`."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any

import click

from ..job import TERMINAL_STATES
from .base import (
    Failure,
    Settings,
    admin,
    cli,
    console,
    database_options,
    run,
)

# --------------------------------------------------------------------------- prune


@cli.command()
@click.option(
    "--max-age",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Delete finished jobs older than this [default: the Pruner's, 60].",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many jobs [default: 10000].")
@click.option(
    "--state",
    "-s",
    "states",
    multiple=True,
    type=click.Choice(sorted(TERMINAL_STATES)),
    help="Only jobs in this state (repeatable) [default: all three].",
)
@database_options
def prune(settings: Settings, max_age: float | None, limit: int | None, states: tuple[str, ...]) -> None:
    """Delete old finished jobs once (one Pruner sweep). Steps of workflows that have not
    finished are kept."""
    try:
        from ..plugins.pruner import Pruner
    except ImportError:
        raise Failure("this Baton has no Pruner plugin (baton.plugins.pruner)") from None
    options: dict[str, Any] = {}
    if max_age is not None:
        options["max_age"] = max_age
    if limit is not None:
        options["limit"] = limit
    if states:
        options["states"] = list(states)
    # A failing sweep logs its traceback for long-running nodes; here the error message is
    # printed instead, so keep the log record from reaching Python's last-resort handler.
    logging.getLogger("baton.plugins").addHandler(logging.NullHandler())

    async def go() -> dict[str, Any]:
        plugin = Pruner(**options)
        async with admin(settings) as app:
            return await plugin.sweep(app)

    result = run(go())
    count = int(result.get("pruned_count", 0) or 0)
    by_state = result.get("pruned") or {}
    detail = f" ({', '.join(f'{s} {n}' for s, n in sorted(by_state.items()))})" if count else ""
    console().print(f"pruned {count} job{'s' if count != 1 else ''}{detail}")


# --------------------------------------------------------------------------- demo

DEMO_URL_HELP = (
    "Database URL to run on: postgresql://user@host:5432/db or sqlite:///path/to.db  "
    "[default: a fresh temporary SQLite file; $BATON_DATABASE_URL is not used]"
)


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the temporary database and print how to inspect it.")
@functools.partial(database_options, url_help=DEMO_URL_HELP)
def demo(settings: Settings, keep: bool) -> None:
    """Run a workflow end to end: fan-out across queues, a failing step that retries, a fan-in,
    with live progress and a summary. Takes a few seconds. Runs on a fresh temporary SQLite
    file unless --url is given (BATON_DATABASE_URL is not used, so re-runs start clean); with
    --url, pick a database no worker node uses, or its nodes may fetch the demo's jobs."""
    from ..demo import run_demo

    url = settings.url if settings.url_given else None
    code = run(run_demo(url, schema=settings.schema, keep=keep, console=console()))
    if code:
        sys.exit(code)
