"""`baton workflows list|show`: recent workflows, and one drawn as a tree of its steps."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table
from rich.text import Text

from ..errors import ValidationError
from ..job import TERMINAL_STATES
from ..terminal import counts_text, state_text, usage_table, when, workflow_tree
from ..usage import WorkflowUsage
from ..workflows.status import WorkflowStatus
from .base import (
    Failure,
    Settings,
    admin,
    cli,
    console,
    database_options,
    run,
)

# --------------------------------------------------------------------------- workflows


@cli.group()
def workflows() -> None:
    """List workflows and show one as a tree of its steps."""


@workflows.command("list")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--label", "-l", default=None, help="Only workflows with this label.")
@database_options
def workflows_list(settings: Settings, limit: int, label: str | None) -> None:
    """List recent workflows, newest first."""

    async def go() -> list[dict[str, Any]]:
        async with admin(settings) as app:
            return await app.list_workflows(limit=limit, label=label)

    rows = run(go())
    out = console(wide=True)
    if not rows:
        out.print("no workflows")
        return
    from ..job import to_datetime

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", no_wrap=True)
    table.add_column("LABEL", overflow="fold")
    table.add_column("STATUS", no_wrap=True)
    table.add_column("STEPS DONE", justify="right", no_wrap=True)
    table.add_column("INSERTED", no_wrap=True)
    table.add_column("FINISHED", no_wrap=True)
    for row in rows:
        status = row["completion_status"] or "running"
        table.add_row(
            str(row["id"]),
            row["label"] or "-",
            state_text(status),
            f"{int(row['resolved'] or 0)}/{int(row['steps'] or 0)}",
            when(to_datetime(row["inserted_at"])),
            when(to_datetime(row["announced_at"])),
        )
    out.print(table)


@workflows.command("show")
@click.argument("workflow_id")
@database_options
def workflows_show(settings: Settings, workflow_id: str) -> None:
    """Show a workflow as a tree of its steps, each with its state, and why steps wait; then
    the tokens and cost of its steps, when they recorded usage."""

    async def go() -> tuple[WorkflowStatus, WorkflowUsage] | None:
        async with admin(settings) as app:
            try:
                return await app.workflow_status(workflow_id), await app.workflow_usage(workflow_id)
            except ValidationError as exc:
                if exc.field == "workflow_id":
                    return None
                raise

    found = run(go())
    if found is None:
        raise Failure(f"no workflow with id {workflow_id}")
    status, usage = found
    out = console(wide=True)
    out.print(workflow_tree(status))
    out.print()
    out.print(Text.assemble(("steps: ", "bold"), counts_text(status.counts)))
    if status.finished:
        by = f" by {status.announced_by}" if status.announced_by else ""
        out.print(Text.assemble(("finished: ", "bold"), f"{when(status.announced_at)} (announced{by})"))
    if status.failed_steps:
        out.print(Text.assemble(("failed steps: ", "bold"), (", ".join(status.failed_steps), "red")))
    stuck = {name: why for name, why in status.waiting.items() if status.steps.get(name) == "suspended"}
    if stuck and all(s in TERMINAL_STATES or s in ("suspended", "deleted") for s in status.steps.values()):
        out.print(Text("nothing is running and these steps still wait:", style="bold yellow"))
        for name, why in stuck.items():
            out.print(Text(f"  {name}: {why}"))
    if usage.calls:
        out.print()
        out.print(usage_table("STEP", usage.by_step, usage.totals))
        if usage.unpriced_models:
            out.print(Text(f"unpriced models: {', '.join(usage.unpriced_models)}", style="yellow"))
