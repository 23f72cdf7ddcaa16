"""The engine seam. Domain operations (in `baton.store`) are written once as
`async def op(conn, ...)` against the small `Conn` protocol and named SQL files; each engine
supplies the SQL dialect (`engines/<name>/sql/*.sql`), connections, transactions,
notifications and migrations. The same operation runs on an async connection, a sync
connection (`run_sync`) or a caller's own connection inside the caller's transaction."""

from __future__ import annotations

import abc
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

from ..errors import BatonError

P = ParamSpec("P")
T = TypeVar("T")

Row = dict[str, Any]
NotifyHandler = Callable[[str, str], None]
"""Called with (channel, payload) for every notification a node receives."""


class Conn(Protocol):
    """A connection inside one transaction, as operations see it."""

    dialect: str

    async def fetch(self, query: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        """Run the named query and return every row as a dict."""
        ...

    async def fetchone(self, query: str, params: Mapping[str, Any] | None = None) -> Row | None:
        """Run the named query and return the first row, or None."""
        ...

    async def execute(self, query: str, params: Mapping[str, Any] | None = None) -> int:
        """Run the named query; return the number of rows it changed."""
        ...

    async def notify(self, channel: str, payloads: list[str]) -> None:
        """Send notifications that are delivered when (and only if) the transaction commits."""
        ...

    def channel(self, name: str) -> str:
        """The engine's name for notification channel `name` (for statements that notify)."""
        ...

    async def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Bulk-load rows into `table` (COPY on PostgreSQL, executemany on SQLite)."""
        ...

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (its statements share one clock: `now()`)."""
        ...


Op = Callable[Concatenate[Conn, P], Awaitable[T]]


def drive(awaitable: Awaitable[T]) -> T:
    """Run a coroutine whose awaits never suspend (a blocking connection) to completion."""
    coro = cast(Coroutine[Any, Any, T], awaitable)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a blocking-connection operation tried to suspend; this is a Baton bug")


_COMMENT = re.compile(r"--[^\n]*")


class Queries:
    """Named SQL statements of one dialect, read from `engines/<dialect>/sql/<name>.sql`.

    A file containing the marker `-- baton:prepare` is a hot-path statement whose plan does
    not depend on its parameters: engines may prepare it once per connection. Every other
    statement is planned for its actual parameters (a fan-in step with 10 000 dependencies
    and a step with one must not share a generic plan).

    A file containing `-- baton:text-arrays` casts every list parameter it takes
    (`%(ids)s::bigint[]`): an engine may send those lists as array literals it formats itself.
    """

    def __init__(self, package: str) -> None:
        self._root = resources.files(package) / "sql"
        self._cache: dict[str, str | None] = {}
        self.prepared: set[str] = set()
        self.text_arrays: set[str] = set()

    def get(self, name: str) -> str | None:
        """The statement text, or None for a file with only comments (a no-op in this dialect)."""
        try:
            return self._cache[name]
        except KeyError:
            pass
        path = self._root / f"{name}.sql"
        if not path.is_file():
            raise BatonError(f"internal: query {name!r} has no SQL file at {path}")
        text = path.read_text()
        if "-- baton:prepare" in text:
            self.prepared.add(name)
        if "-- baton:text-arrays" in text:
            self.text_arrays.add(name)
        self._cache[name] = text if _COMMENT.sub("", text).strip() else None
        return self._cache[name]

    def names(self) -> set[str]:
        """Every query name this dialect defines."""
        return {Path(p.name).stem for p in self._root.iterdir() if p.name.endswith(".sql")}


def migration_files(package: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) for every `migrations/NNN_name.sql`, in version order."""
    root = resources.files(package) / "migrations"
    found = []
    for entry in root.iterdir():
        match = re.fullmatch(r"(\d+)_(\w+)\.sql", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found)


class Listener(Protocol):
    """A running subscription to notifications; `close()` stops it."""

    async def close(self) -> None:
        """Stop listening."""
        ...


class Engine(abc.ABC):
    """One database: connections, transactions, notifications, migrations."""

    dialect: str
    url: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect (idempotent); raise DatabaseUnavailable if the database cannot be reached."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every connection."""

    @abc.abstractmethod
    def close_sync(self) -> None:
        """Release every connection from synchronous code (no event loop needed)."""

    @abc.abstractmethod
    async def run(self, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `op` in its own transaction, retrying transient conflicts."""

    async def run_autocommit(self, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `op` with each statement committing on its own: for operations made of one
        write (plus reads), it saves the BEGIN and COMMIT round trips."""
        return await self.run(op, *args, **kwargs)

    async def run_statement(self, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`run_autocommit` for an operation of exactly one write that must never be repeated
        blindly (an insert): after a connection error it fails instead of retrying."""
        return await self.run_autocommit(op, *args, **kwargs)

    async def run_relaxed(self, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`run_autocommit` without waiting for the commit to reach disk. Only for writes whose
        loss in a server crash is harmless: a fetch lost that way leaves its jobs `available`,
        and the (durable) ack that follows a fetch flushes it anyway."""
        return await self.run_autocommit(op, *args, **kwargs)

    @abc.abstractmethod
    def run_sync(self, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `op` in its own transaction from synchronous code (no event loop needed)."""

    @abc.abstractmethod
    async def run_on(self, connection: Any, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `op` on the caller's own async connection, inside the caller's transaction."""

    @abc.abstractmethod
    def run_on_sync(self, connection: Any, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `op` on the caller's own sync connection, inside the caller's transaction."""

    @abc.abstractmethod
    async def listen(self, handler: NotifyHandler, on_reconnect: Callable[[], None] | None = None) -> Listener:
        """Deliver every Baton notification to `handler` until the listener is closed."""

    @abc.abstractmethod
    async def migrate(self) -> list[int]:
        """Apply pending migrations (safe from several processes at once); return those applied."""

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The applied schema version (0 for an empty database)."""

    @abc.abstractmethod
    async def check_schema(self) -> None:
        """Raise MigrationError naming the command to run unless the schema is up to date."""

    async def open_checked(self) -> None:
        """`open`, then `check_schema` (a node's start); an engine may do both at once."""
        await self.open()
        await self.check_schema()

    @staticmethod
    def latest_version(package: str) -> int:
        """The newest migration this release ships."""
        return migration_files(package)[-1][0]

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, for messages."""
        return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", self.url)
