"""`baton queues pause|resume|scale`, on every node or one."""

from __future__ import annotations

import click
from rich.markup import escape

from .base import (
    Settings,
    admin,
    cli,
    console,
    database_options,
    run,
)

# --------------------------------------------------------------------------- queues


@cli.group()
def queues() -> None:
    """Pause, resume and scale queues on running nodes (sent through the database)."""


def _target(node: str | None) -> str:
    return f"node {node}" if node else "every node"


@queues.command("pause")
@click.argument("name")
@click.option("--node", default=None, help="Only on this node [default: every node].")
@database_options
def queues_pause(settings: Settings, name: str, node: str | None) -> None:
    """Stop fetching jobs of queue NAME (running jobs finish)."""

    async def go() -> None:
        async with admin(settings) as app:
            await app.pause_queue(name, node=node)

    run(go())
    console().print(f"asked {_target(node)} to pause queue {escape(name)}")


@queues.command("resume")
@click.argument("name")
@click.option("--node", default=None, help="Only on this node [default: every node].")
@database_options
def queues_resume(settings: Settings, name: str, node: str | None) -> None:
    """Resume fetching jobs of a paused queue NAME."""

    async def go() -> None:
        async with admin(settings) as app:
            await app.resume_queue(name, node=node)

    run(go())
    console().print(f"asked {_target(node)} to resume queue {escape(name)}")


@queues.command("scale")
@click.argument("name")
@click.argument("limit", type=click.IntRange(min=1))
@click.option("--node", default=None, help="Only on this node [default: every node].")
@database_options
def queues_scale(settings: Settings, name: str, limit: int, node: str | None) -> None:
    """Change how many jobs of queue NAME each node runs at once."""

    async def go() -> None:
        async with admin(settings) as app:
            await app.scale_queue(name, limit, node=node)

    run(go())
    console().print(f"asked {_target(node)} to run up to {limit} jobs of queue {escape(name)} at once")
