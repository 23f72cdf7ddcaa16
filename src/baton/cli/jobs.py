"""`baton jobs list|show|retry|cancel`."""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from ..errors import ValidationError
from ..job import STATES, Job
from ..terminal import last_error, state_text, text_lines, to_json, when
from .base import (
    Failure,
    Settings,
    admin,
    cli,
    console,
    database_options,
    run,
)

# --------------------------------------------------------------------------- jobs


@cli.group()
def jobs() -> None:
    """List, show, retry and cancel jobs."""


@jobs.command("list")
@click.option("--queue", "-q", default=None, help="Only jobs of this queue.")
@click.option(
    "--state", "-s", "states", multiple=True, type=click.Choice(STATES), help="Only jobs in this state (repeatable)."
)
@click.option("--worker", "-w", default=None, help="Only jobs of this worker (its registered name).")
@click.option("--workflow", default=None, metavar="ID", help="Only the steps of this workflow.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=50, show_default=True)
@database_options
def jobs_list(
    settings: Settings, queue: str | None, states: tuple[str, ...], worker: str | None, workflow: str | None, limit: int
) -> None:
    """List jobs, newest first."""

    async def go() -> list[Job]:
        async with admin(settings) as app:
            return await app.list_jobs(
                queue=queue, worker=worker, states=list(states) or None, workflow_id=workflow, limit=limit
            )

    found = run(go())
    out = console(wide=True)
    if not found:
        out.print("no jobs match")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", justify="right", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    table.add_column("QUEUE", no_wrap=True)
    table.add_column("WORKER", overflow="fold")
    table.add_column("ATTEMPT", justify="right", no_wrap=True)
    table.add_column("INSERTED", no_wrap=True)
    table.add_column("SCHEDULED", no_wrap=True)
    table.add_column("LAST ERROR", overflow="fold", style="dim")
    for job in found:
        table.add_row(
            str(job.id),
            state_text(job.state),
            job.queue,
            job.worker,
            f"{job.attempt}/{job.max_attempts}",
            when(job.inserted_at),
            when(job.scheduled_at) if job.state in ("scheduled", "retryable") else "",
            last_error(job),
        )
    out.print(table)


@jobs.command("show")
@click.argument("job_id", type=int)
@database_options
def jobs_show(settings: Settings, job_id: int) -> None:
    """Show every field of one job, its errors and the last traceback."""

    async def go() -> Job | None:
        async with admin(settings) as app:
            return await app.get_job(job_id)

    job = run(go())
    if job is None:
        raise Failure(f"no job with id {job_id}")
    out = console(wide=True)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("id", str(job.id)),
        ("state", state_text(job.state)),
        ("queue", job.queue),
        ("worker", job.worker),
        ("args", to_json(job.args)),
        ("meta", to_json(job.meta)),
        ("tags", ", ".join(job.tags) or "-"),
        ("priority", str(job.priority)),
        ("attempt", f"{job.attempt} of {job.max_attempts}"),
        ("inserted_at", when(job.inserted_at)),
        ("scheduled_at", when(job.scheduled_at)),
        ("attempted_at", when(job.attempted_at)),
        ("completed_at", when(job.completed_at)),
        ("cancelled_at", when(job.cancelled_at)),
        ("discarded_at", when(job.discarded_at)),
        ("attempted_by", ", ".join(job.attempted_by or []) or "-"),
        ("workflow_id", job.workflow_id or "-"),
        ("chain_key", job.chain_key or "-"),
    ]
    for key, value in rows:
        grid.add_row(key, value)
    out.print(grid)
    if not job.errors:
        return
    out.print()
    out.print(Text(f"errors ({len(job.errors)})", style="bold"))
    errors = Table(box=None, header_style="bold", pad_edge=False)
    errors.add_column("ATTEMPT", justify="right", no_wrap=True)
    errors.add_column("AT", no_wrap=True)
    errors.add_column("ERROR", overflow="fold")
    for entry in job.errors:
        errors.add_row(str(entry.get("attempt", "")), str(entry.get("at", "")), str(entry.get("error", "")))
    out.print(errors)
    tracebacks = [e["traceback"] for e in job.errors if e.get("traceback")]
    if tracebacks:
        out.print()
        out.print(Text("last traceback", style="bold"))
        out.print(text_lines(str(tracebacks[-1]).rstrip()), soft_wrap=True)


@jobs.command("retry")
@click.argument("job_id", type=int)
@database_options
def jobs_retry(settings: Settings, job_id: int) -> None:
    """Move a finished (completed, discarded, cancelled) or retryable job back to available.

    A workflow step whose dependencies have not completed yet goes back to suspended; one
    with a failed dependency is refused (exit 2), naming the step to retry first."""

    async def go() -> tuple[Job | None, Job | None]:
        async with admin(settings) as app:
            try:
                retried = await app.retry_job(job_id)
            except ValidationError as exc:
                if exc.field != "unique":
                    raise
                raise Failure(str(exc).removeprefix("unique: ")) from None  # refused, not bad usage
            return retried, (None if retried else await app.get_job(job_id))

    retried, current = run(go())
    if retried is None:
        if current is None:
            raise Failure(f"no job with id {job_id}")
        raise Failure(
            f"job {job_id} is {current.state}; only completed, discarded, cancelled or retryable jobs can be retried"
        )
    if retried.state == "suspended":  # a workflow step whose dependencies have not completed yet
        console().print(f"job {retried.id} is suspended: it waits for its dependencies, then runs")
        return
    console().print(
        f"job {retried.id} is {retried.state} again (attempt {retried.attempt} of {retried.max_attempts} so far)"
    )


@jobs.command("cancel")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@database_options
def jobs_cancel(settings: Settings, job_ids: tuple[int, ...]) -> None:
    """Cancel jobs by id; executing ones are stopped on their node. Exits 1 if an id is unknown."""

    async def go() -> tuple[int, list[Job]]:
        async with admin(settings) as app:
            count = await app.cancel_all_jobs(ids=list(job_ids))
            return count, await app.list_jobs(ids=list(job_ids), limit=len(job_ids))

    count, found = run(go())
    out = console()
    by_id = {job.id: job for job in found}
    for job_id in dict.fromkeys(job_ids):
        job = by_id.get(job_id)
        if job is None:
            out.print(f"job {job_id}: not found")
        elif job.state == "cancelled":
            out.print(Text.assemble(f"job {job_id}: ", state_text("cancelled")))
        else:
            out.print(Text.assemble(f"job {job_id}: already ", state_text(job.state), ", not cancelled"))
    out.print(f"cancelled {count} job{'s' if count != 1 else ''}")
    missing = [i for i in job_ids if i not in by_id]
    if missing:
        raise Failure(f"no job with id {', '.join(map(str, missing))}")
