"""The `baton` command group and what every command shares: database options, the console,
running a coroutine with clear failures, and an admin app on the chosen database.

Exit codes: 0 success; 1 the command ran but failed (no such job, database unreachable, ...);
2 fix the command or the setup first (bad options, unmigrated database); 128 + signal number
when a worker was stopped by a second signal instead of gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from .. import __version__
from ..app import Baton
from ..engines import resolve_url
from ..errors import BatonError, MigrationError, ValidationError
from ..terminal import SafeConsole

log = logging.getLogger("baton.cli")

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_USAGE = 2  # click reports bad options with 2 as well


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


def settings_from(url: str | None, schema: str | None) -> Settings:
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


def database_options(fn: Callable[..., None], *, url_help: str = URL_HELP) -> Callable[..., None]:
    """Give a command `--url` and `--schema` (so both `baton --url X migrate` and
    `baton migrate --url X` work) and call it with the resolved `Settings` first. A command
    whose `--url` default differs says so in `url_help`
    (`@functools.partial(database_options, url_help=...)`)."""

    @functools.wraps(fn)
    def command(*args: Any, url: str | None, schema: str | None, **kwargs: Any) -> None:
        fn(settings_from(url, schema), *args, **kwargs)

    command = click.option("--schema", default=None, help=SCHEMA_HELP)(command)
    return click.option("--url", metavar="URL", default=None, help=url_help)(command)


def console(stderr: bool = False, *, wide: bool = False) -> Console:
    """The console a command prints with. Strings print as they are: no Rich markup, no
    `:emoji:` codes, since most of what the CLI prints is user data (args, tags, errors, queue,
    worker and step names, URLs) that `[/]` would crash and `[bold]x[/bold]` would alter. Style
    with `rich.text.Text` instead. It is a `SafeConsole`: control characters in anything it
    prints (ESC, CR, a newline inside a cell, C1) are shown escaped, so job data cannot drive
    the terminal; print a multi-line text with `terminal.text_lines`."""
    # Built per command so click's test runner (which swaps sys.stdout) captures the output.
    console = SafeConsole(stderr=stderr, highlight=False, markup=False, emoji=False)
    if wide and not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped tables feed grep and scripts: one row per line beats folding at 80 columns.
        console.width = 400
    return console


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine, turning Baton's errors into messages and exit codes."""
    try:
        return asyncio.run(coro)
    except (MigrationError, ValidationError) as exc:
        raise SetupFailure(str(exc)) from None
    except BatonError as exc:
        raise Failure(str(exc)) from None
    except KeyboardInterrupt:
        raise Interrupted("interrupted") from None


def describe(app: Baton) -> str:
    schema = getattr(app.engine, "schema", "public")
    return app.engine.display_url + (f" (schema {schema})" if schema != "public" else "")


async def check_ready(app: Baton) -> None:
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
async def admin(settings: Settings) -> AsyncIterator[Baton]:
    """A Baton app for one admin command: checked for migrations, closed afterwards."""
    app = Baton(settings.url, schema=settings.schema, plugins=[], log_events=False)
    try:
        await check_ready(app)
        yield app
    finally:
        await app.close()


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
