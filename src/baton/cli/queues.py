"""`baton queues list|pause|resume|scale`: usage against each limit; steering on every node or one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from rich.table import Table

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
    """List queues with the usage of their limits; pause, resume and scale them on running nodes
    (sent through the database)."""


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
    console().print(f"asked {_target(node)} to pause queue {name}")


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
    console().print(f"asked {_target(node)} to resume queue {name}")


def _rate_option(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, float] | None:
    if value is None:
        return None
    allowed, sep, period = value.partition("/")
    try:
        if not sep:
            raise ValueError
        return {"allowed": int(allowed), "period": float(period)}
    except ValueError:
        raise click.BadParameter(f"expected ALLOWED/PERIOD, e.g. 60/60 (60 starts per 60 s), got {value!r}") from None


@queues.command("scale")
@click.argument("name")
@click.argument("limit", type=click.IntRange(min=1), required=False)
@click.option("--node", default=None, help="Only on this node [default: every node].")
@click.option(
    "--global-limit",
    type=click.IntRange(min=1),
    default=None,
    help="Jobs of NAME executing at once across every node (per partition if it has one).",
)
@click.option(
    "--rate-limit",
    callback=_rate_option,
    default=None,
    metavar="ALLOWED/PERIOD",
    help="At most ALLOWED starts per sliding PERIOD seconds across every node, e.g. 60/60.",
)
@database_options
def queues_scale(
    settings: Settings,
    name: str,
    limit: int | None,
    node: str | None,
    global_limit: int | None,
    rate_limit: dict[str, float] | None,
) -> None:
    """Change how many jobs of queue NAME each node runs at once (LIMIT), and/or its limits
    across nodes (--global-limit, --rate-limit; a partition the queue has is kept)."""
    if limit is None and global_limit is None and rate_limit is None:
        raise click.UsageError("give LIMIT, --global-limit or --rate-limit")

    async def go() -> None:
        async with admin(settings) as app:
            await app.scale_queue(name, limit, global_limit=global_limit, rate_limit=rate_limit, node=node)

    run(go())
    asked = []
    if limit is not None:
        asked.append(f"run up to {limit} jobs of queue {name} at once on {_target(node)}")
    if global_limit is not None:
        asked.append(f"run up to {global_limit} jobs of queue {name} at once across every node")
    if rate_limit is not None:
        asked.append(
            f"start up to {rate_limit['allowed']} jobs of queue {name} per {rate_limit['period']:g}s across every node"
        )
    for line in asked:
        console().print(f"asked to {line}")


def _usage(used: int, limit: dict[str, Any] | None, by_partition: Mapping[str, int], what: str) -> str:
    if limit is None:
        return "-"
    text = f"{used}/{limit['allowed']}{what}"
    partition = limit.get("partition")
    if partition:
        busiest = max(by_partition.values(), default=0)
        by = "+".join(partition["fields"]) + (f" {','.join(partition['keys'])}" if partition["keys"] else "")
        text = f"{busiest}/{limit['allowed']}{what} per {by} ({used} in {len(by_partition)} partitions)"
    return text


@queues.command("list")
@database_options
def queues_list(settings: Settings) -> None:
    """The queues live nodes run: per-node limits, jobs running, and usage of the limits
    across nodes (executing against global_limit, starts in the window against rate_limit)."""

    async def go() -> dict[str, dict[str, Any]]:
        async with admin(settings) as app:
            return await app.queue_usage()

    usage = run(go())
    out = console(wide=True)
    if not usage:
        out.print("no live node runs a queue")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("queue", "nodes", "limit/node", "executing", "global limit", "rate limit"):
        table.add_column(column)
    for queue, q in usage.items():
        limits = sorted({n["limit"] for n in q["nodes"].values() if n.get("limit") is not None})
        paused = sum(1 for n in q["nodes"].values() if n.get("paused"))
        rate = q["rate_limit"]
        table.add_row(
            queue,
            f"{len(q['nodes'])}" + (f" ({paused} paused)" if paused else ""),
            ",".join(map(str, limits)) or "-",
            str(q["executing"]),
            _usage(q["executing"], q["global_limit"], q["executing_by_partition"], ""),
            _usage(q["window"], rate, q["window_by_partition"], f" per {rate['period']:g}s" if rate else ""),
        )
    out.print(table)
