"""`baton workflows list|show|start`: recent workflows, one drawn as a tree of its steps, and
starting one from a JSON template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from .. import read
from ..app import Baton
from ..errors import ValidationError, WorkflowError
from ..job import TERMINAL_STATES
from ..terminal import counts_text, printable, state_text, usage_table, when, workflow_tree
from ..usage import WorkflowUsage
from ..workflows.builder import Workflow
from ..workflows.status import WorkflowStatus
from .base import (
    Failure,
    Settings,
    admin,
    check_ready,
    cli,
    console,
    database_options,
    run,
)
from .nodes import load_app_for

# --------------------------------------------------------------------------- workflows


@cli.group()
def workflows() -> None:
    """List workflows, show one as a tree of its steps, start one from a JSON template."""


@workflows.command("list")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--label", "-l", default=None, help="Only workflows with this label.")
@click.option(
    "--status",
    "-s",
    type=click.Choice(["running", "completed", "failed"]),
    default=None,
    help="Only workflows in this status.",
)
@database_options
def workflows_list(settings: Settings, limit: int, label: str | None, status: str | None) -> None:
    """List recent workflows, newest first (the dashboard's query: `baton.read.workflows_page`)."""

    async def go() -> list[dict[str, Any]]:
        async with admin(settings) as app:
            page = await app.engine.run(read.workflows_page, status, label, None, limit)
            return list(page["workflows"])

    rows = run(go())
    out = console(wide=True)
    if not rows:
        out.print("no workflows")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", no_wrap=True)
    table.add_column("LABEL", overflow="fold")
    table.add_column("STATUS", no_wrap=True)
    table.add_column("STEPS DONE", justify="right", no_wrap=True)
    table.add_column("INSERTED", no_wrap=True)
    table.add_column("FINISHED", no_wrap=True)
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["label"] or "-",
            state_text(row["status"]),
            f"{row['resolved']}/{row['steps']}",
            when(row["inserted_at"]),
            when(row["finished_at"]),
        )
    out.print(table)


@workflows.command("show")
@click.argument("workflow_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tree", "mermaid", "dot"]),
    default="tree",
    show_default=True,
    help="A tree with states, or the graph as Mermaid / Graphviz DOT (grafted steps inside their graft).",
)
@database_options
def workflows_show(settings: Settings, workflow_id: str, fmt: str) -> None:
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
    if fmt != "tree":
        graph = status.to_mermaid() if fmt == "mermaid" else status.to_dot()
        click.echo("\n".join(printable(line) for line in graph.split("\n")), nl=False)
        return
    out = console(wide=True)
    out.print(workflow_tree(status))
    out.print()
    out.print(Text.assemble(("steps: ", "bold"), counts_text(status.counts)))
    if status.finished:
        by = f" by {status.announced_by}" if status.announced_by else ""
        reopened = status.finished_at != status.announced_at
        note = f" (its outcome first announced {when(status.announced_at)}{by})" if reopened else f" (announced{by})"
        out.print(Text.assemble(("finished: ", "bold"), f"{when(status.finished_at)}{note}"))
    if status.failed_steps:
        out.print(Text.assemble(("failed steps: ", "bold"), (printable(", ".join(status.failed_steps)), "red")))
    stuck = {name: why for name, why in status.waiting.items() if status.steps.get(name) == "suspended"}
    if stuck and all(s in TERMINAL_STATES or s in ("suspended", "deleted") for s in status.steps.values()):
        out.print(Text("nothing is running and these steps still wait:", style="bold yellow"))
        for name, why in stuck.items():
            out.print(Text(printable(f"  {name}: {why}")))
    if usage.calls:
        out.print()
        out.print(usage_table("STEP", usage.by_step, usage.totals))
        if usage.unpriced_models:
            out.print(Text(printable(f"unpriced models: {', '.join(usage.unpriced_models)}"), style="yellow"))


def _param_value(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise click.BadParameter(f"{text!r} must look like NAME=VALUE, e.g. day=2026-12-01", param_hint="--param")
    try:
        value: Any = json.loads(raw)  # 3, true, {"a": 1} keep their JSON type
    except ValueError:
        value = raw  # anything else is a string: day=2026-12-01
    return name.strip(), value


@workflows.command("start")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A template param (repeatable); VALUE is JSON if it parses as JSON, else a string.",
)
@click.option(
    "--app",
    "app_ref",
    default=None,
    metavar="MODULE:ATTR",
    help="The Baton app whose workers the template names (default: workers importable by name).",
)
@database_options
def workflows_start(settings: Settings, file: Path, params: tuple[str, ...], app_ref: str | None) -> None:
    """Insert the workflow template FILE.json (with --param values) and print its id."""
    try:
        data = json.loads(file.read_text())
    except OSError as exc:
        raise Failure(f"cannot read {file}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise Failure(f"{file} is not JSON: {exc}") from None
    values: dict[str, Any] = {}
    for text in params:
        name, value = _param_value(text)
        if name in values:
            raise click.BadParameter(f"param {name!r} is given twice", param_hint="--param")
        values[name] = value
    app: Baton | None = None
    if app_ref is not None:
        app = load_app_for(settings, app_ref)

    async def go() -> str:
        if app is not None:
            try:
                await check_ready(app)
                return await _start(app, data, values, file)
            finally:
                await app.close()
        async with admin(settings) as admin_app:
            return await _start(admin_app, data, values, file)

    print(run(go()))


async def _start(app: Baton, data: Any, params: dict[str, Any], file: Path) -> str:
    try:
        wf = Workflow.from_dict(data, params=params, app=app)
    except WorkflowError as exc:
        raise Failure(f"{file}: {exc}") from None
    return await app.insert_workflow(wf)
