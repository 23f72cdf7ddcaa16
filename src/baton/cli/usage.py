"""`baton usage`: tokens and cost recorded by jobs (`job.record_usage`), by model."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import click
from rich.text import Text

from ..terminal import printable, usage_table
from ..usage import UsageTotals
from .base import Settings, admin, cli, console, database_options, run

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_since(value: str | None) -> timedelta | None:
    """`30m`, `12h`, `1d`, `7d`, `2w` (or `90s`) as a timedelta; None or `all` for everything kept."""
    if value is None or value.strip().lower() == "all":
        return None
    match = _SPAN.match(value)
    if match is None:
        raise click.BadParameter(
            f"{value!r} is not a time span; use a number and a unit: 30m, 12h, 1d, 7d, 2w (or 'all')",
            param_hint="--since",
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


@cli.command()
@click.option(
    "--since",
    default=None,
    metavar="SPAN",
    help="Only usage recorded in the last SPAN: 30m, 12h, 1d, 7d, 2w [default: all that is kept].",
)
@database_options
def usage(settings: Settings, since: str | None) -> None:
    """Tokens and cost of the calls jobs recorded, by model, with a total. A cost of `-`
    means the model had no price when the calls were recorded."""
    span = parse_since(since)

    async def go() -> dict[str, dict[str, Any]]:
        async with admin(settings) as app:
            return await app.usage_by_model(since=span)

    by_model = run(go())
    out = console(wide=True)
    if not by_model:
        within = f" in the last {since.strip()}" if since is not None and span is not None else ""
        out.print("no usage recorded" + within)
        return
    rows = {model: UsageTotals(**u) for model, u in by_model.items()}
    total = UsageTotals()
    for u in rows.values():
        total += u
    out.print(usage_table("MODEL", rows, total))
    unpriced = sorted(m for m, u in rows.items() if u.unpriced_calls)
    if unpriced:
        out.print(Text(printable(f"unpriced models: {', '.join(unpriced)}"), style="yellow"))
