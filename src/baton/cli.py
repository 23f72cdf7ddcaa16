"""The `baton` command line: migrate a database, run a worker node, inspect and steer jobs,
workflows and queues, prune old jobs, and run the demo.

Exit codes: 0 success; 1 the command ran but failed (no such job, database unreachable, ...);
2 fix the command or the setup first (bad options, unmigrated database); 128 + signal number
when a worker was stopped by a second signal instead of gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from . import __version__
from .app import Baton
from .engines import resolve_url
from .errors import BatonError, MigrationError, ValidationError
from .job import STATES, TERMINAL_STATES, Job
from .workflows.status import StepStatus, WorkflowStatus

log = logging.getLogger("baton.cli")

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_USAGE = 2  # click reports bad options with 2 as well

STATE_STYLES: dict[str, str] = {
    "available": "cyan",
    "scheduled": "blue",
    "suspended": "bright_black",
    "executing": "bold yellow",
    "retryable": "dark_orange",
    "completed": "green",
    "discarded": "bold red",
    "cancelled": "magenta",
    "deleted": "red",
    "running": "yellow",
    "failed": "bold red",
}
STATE_MARKS: dict[str, str] = {
    "available": "○",
    "scheduled": "◷",
    "suspended": "◌",
    "executing": "▶",
    "retryable": "↻",
    "completed": "✓",
    "discarded": "✗",
    "cancelled": "⊘",
    "deleted": "⌫",
}


class Failure(click.ClickException):
    """A command failed in a way the user can act on: printed as `Error: ...`, no traceback."""

    exit_code = EXIT_FAILED


class SetupFailure(Failure):
    """The command or the setup needs fixing first (bad option, unmigrated database)."""

    exit_code = EXIT_USAGE


class Interrupted(Failure):
    """Ctrl-C during an admin command."""

    exit_code = 128 + signal.SIGINT


@dataclass(frozen=True, slots=True)
class Settings:
    """The database options a command runs with (given before or after the command name)."""

    url: str
    schema: str
    url_given: bool


@dataclass(frozen=True, slots=True)
class GroupOptions:
    """`--url` / `--schema` as given before the command name (`baton --url X jobs list`)."""

    url: str | None
    schema: str | None


URL_HELP = (
    "Database URL: postgresql://user@host:5432/db or sqlite:///path/to.db  "
    "[default: $BATON_DATABASE_URL, else sqlite:///baton.db]"
)
SCHEMA_HELP = "PostgreSQL schema holding Baton's tables  [default: public]"


def _settings(url: str | None, schema: str | None) -> Settings:
    """Merge a command's own --url/--schema with the group's (the command's win)."""
    group = click.get_current_context().find_object(GroupOptions)
    if url is None and group is not None:
        url = group.url
    if schema is None and group is not None:
        schema = group.schema
    try:
        resolved = resolve_url(url)
    except ValidationError as exc:
        raise click.BadParameter(str(exc).removeprefix("url: "), param_hint="--url") from None
    return Settings(url=resolved, schema=schema or "public", url_given=url is not None)


def database_options(fn: Callable[..., None]) -> Callable[..., None]:
    """Give a command `--url` and `--schema` (so both `baton --url X migrate` and
    `baton migrate --url X` work) and call it with the resolved `Settings` first."""

    @functools.wraps(fn)
    def command(*args: Any, url: str | None, schema: str | None, **kwargs: Any) -> None:
        fn(_settings(url, schema), *args, **kwargs)

    command = click.option("--schema", default=None, help=SCHEMA_HELP)(command)
    return click.option("--url", metavar="URL", default=None, help=URL_HELP)(command)


def _console(stderr: bool = False, *, wide: bool = False) -> Console:
    # Built per command so click's test runner (which swaps sys.stdout) captures the output.
    console = Console(stderr=stderr, highlight=False)
    if wide and not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped tables feed grep and scripts: one row per line beats folding at 80 columns.
        console.width = 400
    return console


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine, turning Baton's errors into messages and exit codes."""
    try:
        return asyncio.run(coro)
    except (MigrationError, ValidationError) as exc:
        raise SetupFailure(str(exc)) from None
    except BatonError as exc:
        raise Failure(str(exc)) from None
    except KeyboardInterrupt:
        raise Interrupted("interrupted") from None


def _where(app: Baton) -> str:
    schema = getattr(app.engine, "schema", "public")
    return app.engine.display_url + (f" (schema {schema})" if schema != "public" else "")


async def _check_ready(app: Baton) -> None:
    """Fail with the command that fixes it unless the database exists and is migrated."""
    if app.engine.dialect == "sqlite":
        path = str(getattr(app.engine, "path", ""))
        # Opening a missing SQLite file would create an empty one behind the user's back.
        if path and path != ":memory:" and not Path(path).exists():
            raise MigrationError(
                f"there is no SQLite database at {path!r}: run `baton --url {app.url} migrate` to create it "
                "(or pass --url / set BATON_DATABASE_URL to the right database)"
            )
    await app.engine.check_schema()


@contextlib.asynccontextmanager
async def _admin(settings: Settings) -> AsyncIterator[Baton]:
    """A Baton app for one admin command: checked for migrations, closed afterwards."""
    app = Baton(settings.url, schema=settings.schema, plugins=[], log_events=False)
    try:
        await _check_ready(app)
        yield app
    finally:
        await app.close()


# --------------------------------------------------------------------------- formatting


def state_text(state: str) -> Text:
    """A job, step or workflow state in its colour."""
    return Text(state, style=STATE_STYLES.get(state, ""))


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _first_line(text: str | None, width: int = 100) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _last_error(job: Job) -> str:
    return _first_line(str(job.errors[-1].get("error", ""))) if job.errors else ""


def _step_parents(name: str, step: StepStatus, steps: Mapping[str, StepStatus]) -> list[str]:
    """The stored steps `name` waits for. A declared dep naming a sub-workflow stands for the
    sub-workflow's last steps (those no other step inside it depends on)."""
    parents: list[str] = []
    for dep in step.deps:
        if dep in steps:
            parents.append(dep)
            continue
        members = [s for s in steps if s.startswith(dep + ".")]
        inner = {d for m in members for d in steps[m].deps}
        parents.extend(m for m in members if m not in inner)
    return [p for p in dict.fromkeys(parents) if p != name]


def step_label(status: WorkflowStatus, name: str) -> Text:
    """One step as a tree line: mark, name, coloured state, and what explains it."""
    step = status.details[name]
    style = STATE_STYLES.get(step.state, "")
    text = Text.assemble((STATE_MARKS.get(step.state, "·") + " ", style), (name, "bold"), "  ", (step.state, style))
    extras: list[str] = []
    if step.queue:
        extras.append(step.queue)
    if step.attempt > 1 or step.state == "retryable":
        extras.append(f"attempt {step.attempt}/{step.max_attempts}")
    if step.state == "completed" and step.run_ms is not None:
        extras.append(f"{step.run_ms} ms")
    waiting = status.waiting.get(name)
    if step.state == "suspended" and waiting:
        extras.append(waiting)
    if step.reason:
        extras.append(f"reason: {step.reason}")
    if step.last_error and (step.state != "completed" or step.attempt > 1):
        extras.append(("last error: " if step.state == "completed" else "error: ") + _first_line(step.last_error, 80))
    if extras:
        text.append("  · " + " · ".join(extras), style="dim")
    return text


def workflow_tree(status: WorkflowStatus) -> Tree:
    """Draw a stored workflow's DAG as a tree: roots are steps without dependencies, children
    their dependents. A step with several dependencies is drawn in full under the first and
    as a `↑ see above` reference under the others, so the tree stays finite."""
    title = Text.assemble(
        ("workflow ", "bold"),
        (status.label or "(no label)", "bold"),
        f"  {status.workflow_id}  ",
        (status.status, STATE_STYLES.get(status.status, "")),
    )
    tree = Tree(title, guide_style="bright_black")
    steps = status.details
    children: dict[str, list[str]] = {name: [] for name in steps}
    roots: list[str] = []
    for name, step in steps.items():
        parents = _step_parents(name, step, steps)
        if not parents:
            roots.append(name)
        for parent in parents:
            children[parent].append(name)
    drawn: set[str] = set()

    def draw(branch: Tree, name: str) -> None:
        if name in drawn:
            state = steps[name].state
            branch.add(
                Text.assemble(
                    (name, "bold dim"), "  ", (state, STATE_STYLES.get(state, "") + " dim"), ("  ↑ see above", "dim")
                )
            )
            return
        drawn.add(name)
        node = branch.add(step_label(status, name))
        for child in children[name]:
            draw(node, child)

    for name in roots:
        draw(tree, name)
    # Steps whose dependencies are not stored steps (e.g. inside a sub-workflow whose outer
    # deps are not recorded per step) would otherwise vanish from the drawing.
    for name in steps:
        if name not in drawn:
            draw(tree, name)
    return tree


def counts_text(counts: Mapping[str, int]) -> Text:
    """`completed 5 · executing 1` in state colours, in lifecycle order."""
    order = [*STATES, "deleted"]
    text = Text()
    for state in sorted(counts, key=lambda s: order.index(s) if s in order else len(order)):
        if text:
            text.append(" · ", style="dim")
        text.append(f"{state} {counts[state]}", style=STATE_STYLES.get(state, ""))
    return text


# --------------------------------------------------------------------------- the group


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--url", metavar="URL", default=None, help=URL_HELP)
@click.option("--schema", default=None, help=SCHEMA_HELP)
@click.version_option(__version__, prog_name="baton")
@click.pass_context
def cli(ctx: click.Context, url: str | None, schema: str | None) -> None:
    """Baton: durable background jobs, workflows and chains on PostgreSQL or SQLite.

    --url and --schema may be given before or after the command name.

    Exit codes: 0 success, 1 the command failed (no such job, database unreachable),
    2 bad options or an unmigrated database, 128+N a worker stopped by a second signal N.
    """
    ctx.obj = GroupOptions(url=url, schema=schema)


def main() -> None:
    """Entry point of the `baton` console script."""
    cli(prog_name="baton")


# --------------------------------------------------------------------------- migrate


@cli.command()
@database_options
def migrate(settings: Settings) -> None:
    """Create or upgrade Baton's tables (idempotent, safe from several processes at once)."""

    async def go() -> tuple[list[int], int, str]:
        app = Baton(settings.url, schema=settings.schema, plugins=[], log_events=False)
        try:
            applied = await app.migrate()
            return applied, await app.engine.schema_version(), _where(app)
        finally:
            await app.close()

    applied, version, where = _run(go())
    out = _console()
    if applied:
        out.print(
            f"applied migration{'s' if len(applied) > 1 else ''} {', '.join(map(str, applied))} to {escape(where)}: "
            f"schema version {version}"
        )
    else:
        out.print(f"{escape(where)} is up to date (schema version {version})")


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
    `attr` may also be a function taking no arguments that returns the app."""
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
    if not isinstance(target, Baton) and callable(target):
        target = target()
    if not isinstance(target, Baton):
        raise SetupFailure(f"{reference} is a {type(target).__name__}, not a baton.Baton app")
    return target


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
    "--app", "app_ref", required=True, metavar="MODULE:ATTR", help="The Baton app to run, e.g. myproject.jobs:app."
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
    if settings.url_given:
        os.environ["BATON_DATABASE_URL"] = settings.url
    try:
        app = load_app(app_ref)
    except BatonError as exc:
        raise SetupFailure(f"{app_ref}: {exc}") from None
    if settings.url_given and app.url != settings.url:
        raise SetupFailure(
            f"{app_ref} is configured with database {app.engine.display_url}, not {settings.url}: build it with "
            "baton.Baton() (no URL) so --url and BATON_DATABASE_URL apply, or drop --url"
        )
    app_schema = getattr(app.engine, "schema", "public")
    if settings.schema != "public" and settings.schema != app_schema:
        raise SetupFailure(f"{app_ref} uses schema {app_schema!r}, not {settings.schema!r}; set schema= on the app")
    if queues is not None:
        app.queues = {name: {"limit": limit, "paused": False} for name, limit in queues.items()}
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
        await _check_ready(app)
        return await serve(app)

    code = _run(go())
    if code:
        sys.exit(code)


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
        async with _admin(settings) as app:
            return await app.list_jobs(
                queue=queue, worker=worker, states=list(states) or None, workflow_id=workflow, limit=limit
            )

    found = _run(go())
    out = _console(wide=True)
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
            _when(job.inserted_at),
            _when(job.scheduled_at) if job.state in ("scheduled", "retryable") else "",
            _last_error(job),
        )
    out.print(table)


@jobs.command("show")
@click.argument("job_id", type=int)
@database_options
def jobs_show(settings: Settings, job_id: int) -> None:
    """Show every field of one job, its errors and the last traceback."""

    async def go() -> Job | None:
        async with _admin(settings) as app:
            return await app.get_job(job_id)

    job = _run(go())
    if job is None:
        raise Failure(f"no job with id {job_id}")
    out = _console(wide=True)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("id", str(job.id)),
        ("state", state_text(job.state)),
        ("queue", job.queue),
        ("worker", job.worker),
        ("args", _json(job.args)),
        ("meta", _json(job.meta)),
        ("tags", ", ".join(job.tags) or "-"),
        ("priority", str(job.priority)),
        ("attempt", f"{job.attempt} of {job.max_attempts}"),
        ("inserted_at", _when(job.inserted_at)),
        ("scheduled_at", _when(job.scheduled_at)),
        ("attempted_at", _when(job.attempted_at)),
        ("completed_at", _when(job.completed_at)),
        ("cancelled_at", _when(job.cancelled_at)),
        ("discarded_at", _when(job.discarded_at)),
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
        out.print(Text(str(tracebacks[-1]).rstrip()), soft_wrap=True)


@jobs.command("retry")
@click.argument("job_id", type=int)
@database_options
def jobs_retry(settings: Settings, job_id: int) -> None:
    """Move a finished (completed, discarded, cancelled) or retryable job back to available."""

    async def go() -> tuple[Job | None, Job | None]:
        async with _admin(settings) as app:
            retried = await app.retry_job(job_id)
            return retried, (None if retried else await app.get_job(job_id))

    retried, current = _run(go())
    if retried is None:
        if current is None:
            raise Failure(f"no job with id {job_id}")
        raise Failure(
            f"job {job_id} is {current.state}; only completed, discarded, cancelled or retryable jobs can be retried"
        )
    _console().print(
        f"job {retried.id} is {retried.state} again (attempt {retried.attempt} of {retried.max_attempts} so far)"
    )


@jobs.command("cancel")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@database_options
def jobs_cancel(settings: Settings, job_ids: tuple[int, ...]) -> None:
    """Cancel jobs by id; executing ones are stopped on their node. Exits 1 if an id is unknown."""

    async def go() -> tuple[int, list[Job]]:
        async with _admin(settings) as app:
            count = await app.cancel_all_jobs(ids=list(job_ids))
            return count, await app.list_jobs(ids=list(job_ids), limit=len(job_ids))

    count, found = _run(go())
    out = _console()
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
        async with _admin(settings) as app:
            return await app.list_workflows(limit=limit, label=label)

    rows = _run(go())
    out = _console(wide=True)
    if not rows:
        out.print("no workflows")
        return
    from .job import to_datetime

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
            _when(to_datetime(row["inserted_at"])),
            _when(to_datetime(row["announced_at"])),
        )
    out.print(table)


@workflows.command("show")
@click.argument("workflow_id")
@database_options
def workflows_show(settings: Settings, workflow_id: str) -> None:
    """Show a workflow as a tree of its steps, each with its state, and why steps wait."""

    async def go() -> WorkflowStatus | None:
        async with _admin(settings) as app:
            try:
                return await app.workflow_status(workflow_id)
            except ValidationError as exc:
                if exc.field == "workflow_id":
                    return None
                raise

    status = _run(go())
    if status is None:
        raise Failure(f"no workflow with id {workflow_id}")
    out = _console(wide=True)
    out.print(workflow_tree(status))
    out.print()
    out.print(Text.assemble(("steps: ", "bold"), counts_text(status.counts)))
    if status.finished:
        by = f" by {status.announced_by}" if status.announced_by else ""
        out.print(Text.assemble(("finished: ", "bold"), f"{_when(status.announced_at)} (announced{by})"))
    if status.failed_steps:
        out.print(Text.assemble(("failed steps: ", "bold"), (", ".join(status.failed_steps), "red")))
    stuck = {name: why for name, why in status.waiting.items() if status.steps.get(name) == "suspended"}
    if stuck and all(s in TERMINAL_STATES or s in ("suspended", "deleted") for s in status.steps.values()):
        out.print(Text("nothing is running and these steps still wait:", style="bold yellow"))
        for name, why in stuck.items():
            out.print(Text(f"  {name}: {why}"))


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
        async with _admin(settings) as app:
            await app.pause_queue(name, node=node)

    _run(go())
    _console().print(f"asked {_target(node)} to pause queue {escape(name)}")


@queues.command("resume")
@click.argument("name")
@click.option("--node", default=None, help="Only on this node [default: every node].")
@database_options
def queues_resume(settings: Settings, name: str, node: str | None) -> None:
    """Resume fetching jobs of a paused queue NAME."""

    async def go() -> None:
        async with _admin(settings) as app:
            await app.resume_queue(name, node=node)

    _run(go())
    _console().print(f"asked {_target(node)} to resume queue {escape(name)}")


@queues.command("scale")
@click.argument("name")
@click.argument("limit", type=click.IntRange(min=1))
@click.option("--node", default=None, help="Only on this node [default: every node].")
@database_options
def queues_scale(settings: Settings, name: str, limit: int, node: str | None) -> None:
    """Change how many jobs of queue NAME each node runs at once."""

    async def go() -> None:
        async with _admin(settings) as app:
            await app.scale_queue(name, limit, node=node)

    _run(go())
    _console().print(f"asked {_target(node)} to run up to {limit} jobs of queue {escape(name)} at once")


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
        from .plugins.pruner import Pruner
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
        async with _admin(settings) as app:
            return await plugin.sweep(app)

    result = _run(go())
    count = int(result.get("pruned_count", 0) or 0)
    by_state = result.get("pruned") or {}
    detail = f" ({', '.join(f'{s} {n}' for s, n in sorted(by_state.items()))})" if count else ""
    _console().print(f"pruned {count} job{'s' if count != 1 else ''}{detail}")


# --------------------------------------------------------------------------- dashboard


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

        from .dashboard import create_app
    except ImportError as exc:
        raise SetupFailure(f"the dashboard needs its extra: pip install 'baton[dashboard]' ({exc})") from None
    auth = basic_auth if basic_auth is not None else os.environ.get("BATON_DASHBOARD_AUTH") or None
    if app_ref is not None:
        if settings.url_given:
            os.environ["BATON_DATABASE_URL"] = settings.url
        try:
            app = load_app(app_ref)
        except BatonError as exc:
            raise SetupFailure(f"{app_ref}: {exc}") from None
    else:
        app = Baton(settings.url, schema=settings.schema, plugins=[], log_events=False)
    try:
        asgi = create_app(app, read_only=read_only, auth=auth)
    except ValidationError as exc:
        raise SetupFailure(f"--basic-auth / BATON_DASHBOARD_AUTH: {exc}") from None

    async def go() -> None:
        try:
            await _check_ready(app)
            where = f"http://{host}:{port}/"
            notes = [n for n in ("read-only" if read_only else "", "basic auth" if auth else "") if n]
            _console(stderr=True).print(
                f"Baton dashboard for {escape(_where(app))} on {where}" + (f" ({', '.join(notes)})" if notes else "")
            )
            if auth is None and host not in ("127.0.0.1", "localhost", "::1"):
                log.warning("the dashboard listens on %s without authentication: pass --basic-auth USER:PASS", host)
            config = uvicorn.Config(asgi, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
            await uvicorn.Server(config).serve()
        finally:
            await app.close()

    _run(go())


# --------------------------------------------------------------------------- demo


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the temporary database and print how to inspect it.")
@database_options
def demo(settings: Settings, keep: bool) -> None:
    """Run a workflow end to end: fan-out across queues, a failing step that retries, a fan-in,
    with live progress and a summary. Takes a few seconds. Runs on a fresh temporary SQLite
    file unless --url is given (BATON_DATABASE_URL is not used, so re-runs start clean); with
    --url, pick a database no worker node uses, or its nodes may fetch the demo's jobs."""
    from .demo import run_demo

    url = settings.url if settings.url_given else None
    code = _run(run_demo(url, schema=settings.schema, keep=keep, console=_console()))
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
