"""PostgreSQL engine: a psycopg async pool for the runtime, a sync pool for sync callers,
LISTEN/NOTIFY for wake-ups, and advisory-locked migrations."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import select
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from itertools import chain, islice, repeat
from typing import Any

import psycopg
import psycopg.errors
import psycopg_pool
from psycopg import sql
from psycopg.rows import dict_row

from ..._tasks import cancel_and_wait, watch
from ...errors import DatabaseUnavailable, MigrationError, ValidationError
from ..base import Engine, Listener, NotifyHandler, Op, P, Queries, Row, T, drive, migration_files

log = logging.getLogger("baton.engine")

PACKAGE = __package__ or "baton.engines.postgres"
CHANNELS = ("insert", "signal", "workflow", "leader")
MIGRATION_LOCK = 0x6261746F6E  # "baton"
_RETRYABLE = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)


def unavailable(url: str, exc: BaseException) -> DatabaseUnavailable:
    """Translate a driver or pool error into a DatabaseUnavailable that says what to check."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatabaseUnavailable(
        f"cannot reach PostgreSQL at {url}: {reason}. Check the URL (or BATON_DATABASE_URL) and that "
        "the server is running and accepting connections."
    )


def is_connection_error(exc: BaseException) -> bool:
    """True for errors that mean the connection or server went away (not a bad query)."""
    if isinstance(exc, psycopg_pool.PoolTimeout | DatabaseUnavailable):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


# Rows per COPY chunk. Fewer than the garbage collector's first threshold (700 new container
# objects): a chunk's row tuples are freed before they trigger a collection, so a bulk insert
# neither pauses for collections nor promotes its rows to older generations (whose full
# collection, over all of the caller's objects, costs tens of milliseconds).
_COPY_ROWS = 500
_COPY_FIRST_ROWS = 100
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NONE = type(None)
_TUPLES_OK = psycopg.pq.ExecStatus.TUPLES_OK
_TEXT_OR_NULL = {str, _NONE}


def _needs_escape(text: str) -> bool:
    return "\\" in text or "\t" in text or "\n" in text or "\r" in text


def _copy_text(text: str) -> str:
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.translate(_COPY_ESCAPES)
    return text


def _copy_value(value: Any, stamps: dict[int, str]) -> str:
    """One value in COPY's text format (`stamps`: datetimes already formatted, by object)."""
    kind = type(value)
    if kind is str:
        return _copy_text(value)
    if value is None:
        return "\\N"
    if kind is int:
        return str(value)
    if kind is datetime:
        text = stamps.get(id(value))
        if text is None:
            text = stamps[id(value)] = value.isoformat()
        return text
    if kind is list or kind is tuple:
        if not value:
            return "{}"
        items = ",".join('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in value)
        return _copy_text("{" + items + "}")
    if kind is bool:
        return "t" if value else "f"
    if kind is float:
        return repr(value)
    return _copy_text(json.dumps(value, separators=(",", ":")))


def _copy_column(values: list[Any], stamps: dict[int, str]) -> list[str]:
    """One column of a chunk in COPY's text format. A column of plain strings (with NULLs),
    ints, bools, one shared datetime is formatted at once (C loops: no Python call per value),
    arrays of text once per distinct array; any other column value by value."""
    kinds = set(map(type, values))
    if len(kinds) == 1:
        kind = next(iter(kinds))
        if kind is str:
            return [_copy_text(v) for v in values] if _needs_escape("".join(values)) else values
        if kind is int:
            return list(map(str, values))
        if kind is _NONE:
            return ["\\N"] * len(values)
        if kind is bool:
            return ["t" if v else "f" for v in values]
        if kind is datetime and len(set(map(id, values))) == 1:
            return [_copy_value(values[0], stamps)] * len(values)
        if kind is list or kind is tuple:  # arrays of text (tags, a step's deps): few distinct ones
            texts: dict[tuple[str, ...], str] = {}
            out = []
            try:
                for v in values:
                    key = tuple(v)
                    text = texts.get(key)
                    if text is None:
                        "".join(key)  # TypeError unless all text: 1, 1.0 and True are equal keys
                        text = texts[key] = _copy_value(v, stamps)
                    out.append(text)
            except TypeError:
                return [_copy_value(v, stamps) for v in values]
            return out
    elif kinds == _TEXT_OR_NULL and not _needs_escape("".join(v for v in values if v is not None)):
        return ["\\N" if v is None else v for v in values]
    return [_copy_value(v, stamps) for v in values]


def _copy_lines(rows: Iterable[Sequence[Any]]) -> bytes:
    """Rows in COPY's text format. Formatted here rather than with psycopg's per-row writer,
    which is Python code and costs more than the server's whole insert for cheap rows; column
    by column, so that most columns are formatted without a Python call per value, and the
    same datetime object (a batch's shared clock) is formatted once."""
    chunk = [tuple(row) for row in rows]
    if not chunk:
        return b""
    stamps: dict[int, str] = {}  # the chunk holds every value, so no id is reused meanwhile
    width = len(chunk[0])
    if any(len(row) != width for row in chunk):  # not a table's rows: value by value
        lines = ["\t".join(_copy_value(v, stamps) for v in row) for row in chunk]
    else:
        columns = [_copy_column(list(column), stamps) for column in zip(*chunk, strict=True)]
        lines = list(map("\t".join, zip(*columns, strict=True))) if columns else [""] * len(chunk)
    lines.append("")
    return "\n".join(lines).encode()


def _array_literal(values: list[Any]) -> str | list[Any]:
    """A list of ints, strings and Nones as a PostgreSQL array literal, for a parameter the
    statement casts (`%(ids)s::bigint[]`): several times cheaper than psycopg's list dumper,
    which is Python code run per element. Any other list is returned as it is."""
    items: list[str] = []
    add = items.append
    for v in values:
        kind = type(v)
        if kind is int:
            add(str(v))
        elif kind is str:
            add('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' if v else '""')
        elif v is None:
            add("NULL")
        else:
            return values
    return "{" + ",".join(items) + "}"


def _server_closed(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """True if the server has closed this idle pooled connection (a restart, an idle timeout,
    pg_terminate_backend): its socket is readable although nothing was asked, because a FATAL
    message or the end of the stream is waiting. One non-blocking poll, no round trip."""
    if conn.closed or conn.broken:
        return True
    try:
        poller = select.poll()  # not select(): a busy process has descriptors beyond FD_SETSIZE
        poller.register(conn.fileno(), select.POLLIN)
        ready = poller.poll(0)
    except (OSError, ValueError):
        return True
    if not ready:
        return False
    try:
        conn.pgconn.consume_input()
    except psycopg.OperationalError:
        return True
    # Data on an idle connection that did not end it (a notice): harmless, but a connection
    # in an unknown state is cheaper to replace than to trust.
    return True


async def _read_version(conn: psycopg.AsyncConnection[Any]) -> int:
    """The applied schema version on this connection's search_path (0: not migrated)."""
    try:
        cur = await conn.execute("SELECT coalesce(max(version), 0) FROM baton_migrations")
    except psycopg.errors.UndefinedTable:
        return 0
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _getconn(pool: psycopg_pool.AsyncConnectionPool) -> psycopg.AsyncConnection[Any]:
    """A pooled connection the server has not closed (see _server_closed). Dead ones (a server
    restart kills every idle connection) are closed and given back at once, and the pool opens
    a replacement for each. Not the pool's `check` callback: the pool waits 1 s, 2 s, 4 s...
    after each connection that fails it, so after a restart with eight idle connections the
    first call waited past its 10 s timeout, failing although the server was back."""
    for _ in range(pool.max_size + 1):
        conn = await pool.getconn()
        if not _server_closed(conn):
            return conn
        await conn.close()
        await pool.putconn(conn)  # closed: the pool discards it and connects anew
    return await pool.getconn()  # still dying as they come: the statement reports why


def _getconn_sync(pool: psycopg_pool.ConnectionPool) -> psycopg.Connection[Any]:
    """`_getconn` for the sync pool."""
    for _ in range(pool.max_size + 1):
        conn = pool.getconn()
        if not _server_closed(conn):
            return conn
        conn.close()
        pool.putconn(conn)
    return pool.getconn()


# Each new pooled connection calls baton_finish_workflows once with nothing to finish, and
# baton_step_counts for no workflow, which compiles them and plans their statements (migration
# 008): otherwise a connection's first finished workflow pays for that (about 2 ms), and under a
# pool that is every connection's first. Skipped before migration 008.
_WARM = """DO $$ BEGIN
    IF to_regprocedure('baton_step_counts(text)') IS NOT NULL THEN
        PERFORM * FROM baton_finish_workflows('{}'::text[], '', '', '');
        PERFORM baton_step_counts('');
    END IF;
END $$"""


async def _warm_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """Pool configure: plan the finish of workflows on a new connection (see _WARM); a failure
    only costs the first finish on that connection its planning, so it is logged, not raised."""
    try:
        await conn.execute(_WARM)
    except psycopg.Error as exc:
        log.debug("could not warm a new connection (%s)", exc)


# Put a connection of the caller's on the engine's schema, returning the search_path to put
# back (read first: the OFFSET keeps the subquery from being merged into the set_config call).
_ENTER_SCHEMA = (
    "SELECT s.saved, set_config('search_path', %(path)s, %(local)s) "
    "FROM (SELECT current_setting('search_path') AS saved OFFSET 0) AS s"
)
_LEAVE_SCHEMA = "SELECT set_config('search_path', %(path)s, %(local)s)"


async def _first_value(connection: Any, query: str, params: Mapping[str, Any]) -> Any:
    """The first column of the first row of `query` on a psycopg connection, async or sync."""
    cur = connection.cursor()
    done = cur.execute(query, params)
    if inspect.isawaitable(done):
        await done
    row = cur.fetchone()
    if inspect.isawaitable(row):
        row = await row
    return row[0]


class PgConn:
    """`Conn` over a psycopg connection, async or sync (the sync one never suspends)."""

    dialect = "postgres"

    def __init__(self, conn: Any, queries: Queries, channel: Callable[[str], str], defer: bool = False) -> None:
        self._conn, self._queries, self._channel = conn, queries, channel
        self.round_trips = 0
        # In a transaction Baton runs, notifications wait for its end and go out as one
        # statement (PostgreSQL delivers them on commit either way, in the order sent).
        self._deferred: list[tuple[str, str]] | None = [] if defer else None

    async def _cursor(self, query: str, params: Mapping[str, Any] | None) -> Any:
        text = self._queries.get(query)
        if text is None:
            return None
        if params and query in self._queries.text_arrays:
            params = {k: _array_literal(v) if type(v) is list else v for k, v in params.items()}
        cur = self._conn.cursor(row_factory=dict_row)
        done = cur.execute(text, params, prepare=None if query in self._queries.prepared else False)
        if inspect.isawaitable(done):
            await done
        self.round_trips += 1
        return cur

    async def fetch(self, query: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        cur = await self._cursor(query, params)
        # The result's status, not `cur.description`: that builds a Column object per column
        # on every call (2 % of a busy node's time in fetches and acks).
        if cur is None or cur.pgresult is None or cur.pgresult.status != _TUPLES_OK:
            return []
        rows = cur.fetchall()
        return await rows if inspect.isawaitable(rows) else rows

    async def fetchone(self, query: str, params: Mapping[str, Any] | None = None) -> Row | None:
        rows = await self.fetch(query, params)
        return rows[0] if rows else None

    async def execute(self, query: str, params: Mapping[str, Any] | None = None) -> int:
        cur = await self._cursor(query, params)
        return 0 if cur is None else max(cur.rowcount, 0)

    async def notify(self, channel: str, payloads: list[str]) -> None:
        if not payloads:
            return
        if self._deferred is not None:
            name = self._channel(channel)
            self._deferred.extend((name, p) for p in payloads)
            return
        await self.execute("notify", {"channel": self._channel(channel), "payloads": payloads})

    async def flush_notifications(self) -> None:
        """Send the deferred notifications (called just before the transaction commits)."""
        if self._deferred:
            pending, self._deferred = self._deferred, []
            await self.execute(
                "notify_many", {"channels": [c for c, _ in pending], "payloads": [p for _, p in pending]}
            )

    def channel(self, name: str) -> str:
        return self._channel(name)

    @property
    def in_transaction(self) -> bool:
        return bool(self._conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS)

    async def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        )
        # Rows are taken (the caller may build them lazily), formatted and sent in chunks, so
        # the server ingests one chunk while the next is being built and formatted; a small
        # first chunk gets the server going sooner.
        pending = iter(rows)
        sizes = chain((_COPY_FIRST_ROWS,), repeat(_COPY_ROWS))
        chunks = (_copy_lines(chunk) for chunk in iter(lambda: list(islice(pending, next(sizes))), []))
        cur = self._conn.cursor()
        if isinstance(self._conn, psycopg.AsyncConnection):
            async with cur.copy(statement) as writer:
                for data in chunks:
                    await writer.write(data)
        else:
            with cur.copy(statement) as writer:
                for data in chunks:
                    writer.write(data)
        self.round_trips += 1


class _PgListener:
    """A dedicated LISTEN connection that reconnects with backoff."""

    def __init__(self, engine: PostgresEngine, handler: NotifyHandler, on_reconnect: Callable[[], None] | None):
        self._engine, self._handler, self._on_reconnect = engine, handler, on_reconnect
        self._names = {engine.channel(name): name for name in CHANNELS}
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = watch(asyncio.create_task(self._run(), name="baton-listener"))

    async def _run(self) -> None:
        delay = 0.1
        first = True
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._engine.url, autocommit=True, connect_timeout=10)
            except (psycopg.OperationalError, OSError) as exc:
                log.warning("baton listener cannot connect (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                async with conn:
                    # One round trip for every channel (a simple-query string of LISTENs).
                    await conn.execute(
                        sql.SQL("; ").join(sql.SQL("LISTEN {}").format(sql.Identifier(c)) for c in self._names)
                    )
                    self.connected.set()
                    if not first:
                        log.info("baton listener reconnected to %s", self._engine.display_url)
                        if self._on_reconnect is not None:
                            self._on_reconnect()
                    first, delay = False, 0.1
                    async for note in conn.notifies():
                        name = self._names.get(note.channel)
                        if name is not None:
                            try:
                                self._handler(name, note.payload)
                            except Exception:
                                log.exception("baton notification handler failed for %s", name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                log.warning("baton listener lost its connection (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None


class PostgresEngine(Engine):
    """PostgreSQL: the production engine."""

    dialect = "postgres"

    def __init__(
        self,
        url: str,
        *,
        schema: str = "public",
        pool_size: int = 10,
        connect_timeout: float = 10.0,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", schema):
            raise ValidationError("schema", f"must be a plain identifier like 'baton' or 'public', got {schema!r}")
        if not isinstance(pool_size, int) or pool_size < 2:
            raise ValidationError("pool_size", f"must be an integer >= 2, got {pool_size!r}")
        self.url = url if not url.startswith("postgres://") else "postgresql://" + url[len("postgres://") :]
        self.schema = schema
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.queries = Queries(PACKAGE)
        self._pool: psycopg_pool.AsyncConnectionPool | None = None
        self._relaxed: psycopg_pool.AsyncConnectionPool | None = None
        self._checking: asyncio.Future[None] | None = None
        self._sync_pool: psycopg_pool.ConnectionPool | None = None
        self._sync_lock = threading.Lock()
        # Serialises opening: the first calls of a fresh app often come together (requests
        # arriving at once), and each would otherwise open pools of its own and leave all but
        # the last connected. Per event loop, as the pools are.
        self._open_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    # -- connections ------------------------------------------------------------------

    def channel(self, name: str) -> str:
        """The NOTIFY channel for `name`, namespaced by schema so schemas do not hear each other."""
        return f"baton_{name}" if self.schema == "public" else f"baton_{self.schema}_{name}"

    def _kwargs(self, relaxed: bool = False) -> dict[str, Any]:
        # No JIT: Baton's statements are short lookups by key, which JIT compilation only delays
        # (by 50-100 ms when a plan's estimated cost passes jit_above_cost on a large table).
        options = f"{self._search_path()} -c jit=off"
        if relaxed:
            options += " -c synchronous_commit=off"
        return {"autocommit": True, "options": options}

    async def open(self) -> None:
        await self._open(check_schema=False)

    async def open_checked(self) -> None:
        """Open the pools and check the schema at once: the version is read on the connection
        that probes the server while the pools connect (with LISTEN alongside the node's
        registration, a node's first job came ~7 ms sooner: 25.7-28.7 -> 18.6-22.7 ms)."""
        await self._open(check_schema=True)

    async def _probe(self, check_schema: bool) -> None:
        """Connect once, so an unreachable server is reported with its cause at once (the pools
        would only time out); with `check_schema`, check the schema version on it too."""
        try:
            probe = await psycopg.AsyncConnection.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(1, int(self.connect_timeout)),
                options=self._search_path(),
            )
        except (psycopg.Error, OSError) as exc:
            raise unavailable(self.display_url, exc) from None
        async with probe:
            if check_schema:
                self._require(await _read_version(probe))

    async def _open(self, check_schema: bool) -> None:
        if self._pool is None:
            loop = asyncio.get_running_loop()
            if self._open_lock is None or self._open_lock[0] is not loop:
                self._open_lock = (loop, asyncio.Lock())
            async with self._open_lock[1]:
                if self._pool is None:  # not opened by a caller that held the lock before
                    await self._open_pools(check_schema)
                    return
        if check_schema:
            await self.check_schema()

    async def _open_pools(self, check_schema: bool) -> None:
        pool = psycopg_pool.AsyncConnectionPool(
            self.url,
            min_size=min(2, self.pool_size),
            max_size=self.pool_size,
            kwargs=self._kwargs(),
            timeout=self.connect_timeout,
            open=False,
            name="baton",
            configure=_warm_async,
        )
        relaxed = psycopg_pool.AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=self.pool_size,
            kwargs=self._kwargs(relaxed=True),
            timeout=self.connect_timeout,
            open=False,
            name="baton-relaxed",
        )
        # The probe and both pools' connections are made at once.
        opening = asyncio.gather(
            pool.open(wait=True, timeout=self.connect_timeout),
            relaxed.open(wait=True, timeout=self.connect_timeout),
        )
        try:
            await self._probe(check_schema)
            await opening
        except BaseException:
            opening.cancel()
            await asyncio.gather(opening, return_exceptions=True)
            await asyncio.gather(pool.close(), relaxed.close(), return_exceptions=True)
            raise
        self._pool, self._relaxed = pool, relaxed

    async def close(self) -> None:
        if self._pools_orphaned():
            self._abandon_pools()
        pool, self._pool = self._pool, None
        relaxed, self._relaxed = self._relaxed, None
        for p in (pool, relaxed):
            if p is not None:
                await p.close()
        with self._sync_lock:
            sync_pool, self._sync_pool = self._sync_pool, None
        if sync_pool is not None:
            sync_pool.close()

    def close_sync(self, timeout: float = 10.0) -> None:
        """`close` from synchronous code. The async pools belong to the event loop that opened
        them: when it runs in another thread they are closed there; when it has ended (an
        `asyncio.run` that never closed the app) no loop is left to await their close, so their
        idle connections are closed directly. Called on the loop's own thread, their close is
        scheduled on it."""
        with self._sync_lock:
            sync_pool, self._sync_pool = self._sync_pool, None
        if sync_pool is not None:
            sync_pool.close()
        if self._pool is None and self._relaxed is None:
            return
        loop = self._open_lock[0] if self._open_lock is not None else None
        if loop is None or self._pools_orphaned():
            self._abandon_pools()
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            watch(loop.create_task(self.close(), name="baton-close-pools"))
        elif loop.is_running():
            asyncio.run_coroutine_threadsafe(self.close(), loop).result(timeout)
        else:  # a loop that is neither closed nor running (between runs): close on it
            loop.run_until_complete(self.close())

    def _pools_orphaned(self) -> bool:
        """Whether the async pools were opened on an event loop that has been closed since (an
        `asyncio.run` that never closed the app): no loop is left to run their close."""
        loop = self._open_lock[0] if self._open_lock is not None else None
        return (self._pool is not None or self._relaxed is not None) and loop is not None and loop.is_closed()

    def _abandon_pools(self) -> None:
        """Drop orphaned async pools, closing their idle connections directly (none is in use
        without a loop to use it)."""
        pools = [p for p in (self._pool, self._relaxed) if p is not None]
        self._pool = self._relaxed = None
        for pool in pools:
            for conn in list(getattr(pool, "_pool", ())):
                conn.pgconn.finish()

    def _conn(self, conn: Any, defer: bool = False) -> PgConn:
        return PgConn(conn, self.queries, self.channel, defer)

    async def run(self, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(False, True, True, op, args, kwargs)

    async def run_autocommit(self, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(False, False, True, op, args, kwargs)

    async def run_relaxed(self, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(True, False, True, op, args, kwargs)

    async def run_statement(self, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(False, False, False, op, args, kwargs)

    def _purge_broken(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        """After a connection error (a server restart kills every pooled connection), check the
        idle connections in the background so the next callers get live ones."""
        if self._checking is None or self._checking.done():
            self._checking = asyncio.ensure_future(pool.check())

    async def _run(
        self,
        relaxed: bool,
        transaction: bool,
        retry_sent: bool,
        op: Op[Any, T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        if self._pool is None:
            await self.open()
        pool = self._relaxed if relaxed else self._pool
        assert pool is not None
        for attempt in range(8):
            conn = None
            try:
                # getconn/putconn rather than `pool.connection()`: the context manager (which
                # also enters the connection's own, a no-op in autocommit) added ~30 us to every
                # operation on an idle node, an insert's and a fetch's alike. putconn discards a
                # connection left broken or in a transaction, as the context manager would.
                raw = await _getconn(pool)
                try:
                    conn = self._conn(raw, defer=transaction)
                    if not transaction:
                        return await op(conn, *args, **kwargs)
                    async with raw.transaction():
                        result = await op(conn, *args, **kwargs)
                        await conn.flush_notifications()
                        return result
                finally:
                    await pool.putconn(raw)
            except _RETRYABLE:
                # A rolled-back transaction is safe to run again; in autocommit mode only if
                # the failing statement was the first (nothing committed before it).
                if attempt == 7 or (not transaction and conn is not None and conn.round_trips > 0):
                    raise
                await asyncio.sleep(0.005 * (attempt + 1))
            except psycopg.errors.UndefinedTable as exc:
                raise self.unmigrated(exc) from None
            except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
                if not is_connection_error(exc):
                    raise
                self._purge_broken(pool)
                # Retry (e.g. a pooled connection killed by a server restart) only if no statement
                # of the operation completed. In a transaction nothing was committed then; in
                # autocommit, acks (fenced, so idempotent) and fetches (a lost fetch is reconciled
                # by its producer) are harmless to repeat. A single-statement insert is not: its
                # statement may have committed before the answer was lost, so it fails loudly.
                if attempt < 2 and conn is not None and conn.round_trips == 0 and (transaction or retry_sent):
                    continue
                raise unavailable(self.display_url, exc) from exc
        raise AssertionError("unreachable")

    def _sync(self) -> psycopg_pool.ConnectionPool:
        with self._sync_lock:
            if self._sync_pool is None:
                try:  # a direct probe reports the real cause (refused, bad password) at once
                    psycopg.connect(self.url, connect_timeout=max(1, int(self.connect_timeout))).close()
                except (psycopg.Error, OSError) as exc:
                    raise unavailable(self.display_url, exc) from None
                pool = psycopg_pool.ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=max(2, self.pool_size // 2),
                    kwargs=self._kwargs(),
                    timeout=self.connect_timeout,
                    open=False,
                    name="baton-sync",
                )
                try:
                    pool.open(wait=True, timeout=self.connect_timeout)
                except psycopg_pool.PoolTimeout as exc:
                    pool.close()
                    raise unavailable(self.display_url, exc) from None
                self._sync_pool = pool
            return self._sync_pool

    def run_sync(self, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        pool = self._sync()
        for attempt in range(8):
            conn = None
            try:
                raw = _getconn_sync(pool)  # not pool.connection(): see _run
                try:
                    conn = self._conn(raw, defer=True)
                    with raw.transaction():
                        result = drive(op(conn, *args, **kwargs))
                        drive(conn.flush_notifications())
                        return result
                finally:
                    pool.putconn(raw)
            except _RETRYABLE:
                if attempt == 7:
                    raise
            except psycopg.errors.UndefinedTable as exc:
                raise self.unmigrated(exc) from None
            except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
                if not is_connection_error(exc):
                    raise
                if attempt < 2 and conn is not None and conn.round_trips == 0:
                    continue
                raise unavailable(self.display_url, exc) from exc
        raise AssertionError("unreachable")

    def unmigrated(self, exc: Exception) -> MigrationError:
        """The error for a query that found no Baton table."""
        schema_option = f" --schema {self.schema}" if self.schema != "public" else ""
        return MigrationError(
            f"the database at {self.display_url} (schema {self.schema!r}) has no Baton tables ({exc}): run "
            f"`baton migrate --url {self.display_url}{schema_option}` or `await app.migrate()`"
        )

    async def run_on(self, connection: Any, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if not isinstance(connection, psycopg.AsyncConnection):
            raise ValidationError(
                "conn",
                "must be a psycopg.AsyncConnection for await app.insert(...); use insert_sync for a sync connection",
            )
        try:
            return await self._on_caller_connection(connection, op, args, kwargs)
        except psycopg.errors.UndefinedTable as exc:
            raise self.unmigrated(exc) from None

    def run_on_sync(self, connection: Any, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if not isinstance(connection, psycopg.Connection):
            raise ValidationError(
                "conn", "must be a psycopg.Connection for the sync API; use await app.insert(...) for an async one"
            )
        try:
            return drive(self._on_caller_connection(connection, op, args, kwargs))
        except psycopg.errors.UndefinedTable as exc:
            raise self.unmigrated(exc) from None

    async def _on_caller_connection(
        self, connection: Any, op: Op[Any, T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        """Run `op` on a connection of the caller's (async or sync: its awaits never suspend
        then), inside whatever transaction the caller has open. The pools' connections are on
        this engine's schema by their search_path; the caller's is on whatever the caller set.
        On the default schema it is used as it is (public is on every default search_path,
        and the usual transactional insert pays no extra round trip); on any other, the
        search_path is set for Baton's statements and put back after them, so the caller's
        own statements see their own tables: SET LOCAL in a transaction (a rollback, of the
        transaction or of a savepoint around the call, undoes it too), for the session on a
        connection in autocommit mode outside one."""
        conn = self._conn(connection)
        if self.schema == "public":
            return await op(conn, *args, **kwargs)
        status = connection.info.transaction_status
        local = status != psycopg.pq.TransactionStatus.IDLE or not connection.autocommit
        saved = await _first_value(connection, _ENTER_SCHEMA, {"path": self.schema, "local": local})
        try:
            return await op(conn, *args, **kwargs)
        finally:
            # In a failed transaction nothing runs, and nothing needs to: its rollback undoes
            # the SET LOCAL. (Outside a transaction a failed statement leaves none behind.)
            if not connection.broken and connection.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
                await _first_value(connection, _LEAVE_SCHEMA, {"path": saved, "local": local})

    async def listen(self, handler: NotifyHandler, on_reconnect: Callable[[], None] | None = None) -> Listener:
        listener = _PgListener(self, handler, on_reconnect)
        listener.start()
        try:
            await asyncio.wait_for(listener.connected.wait(), timeout=self.connect_timeout)
        except TimeoutError:
            log.warning("baton listener not connected yet; relying on polling until it is")
        return listener

    # -- migrations -------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        applied_now: list[int] = []
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, options=f"-c search_path={self.schema}"
            )
        except (psycopg.Error, OSError) as exc:
            raise unavailable(self.display_url, exc) from None
        async with conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS baton_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version FROM baton_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for version, name, text in migration_files(PACKAGE):
                if version in done:
                    continue
                await conn.execute(text.encode())
                await conn.execute("INSERT INTO baton_migrations (version, name) VALUES (%s, %s)", [version, name])
                applied_now.append(version)
        return applied_now

    def _search_path(self) -> str:
        """Connection options that put a connection on this engine's schema."""
        return f"-c search_path={self.schema}"

    async def schema_version(self) -> int:
        try:
            conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, options=self._search_path())
        except (psycopg.Error, OSError) as exc:
            raise unavailable(self.display_url, exc) from None
        async with conn:
            return await _read_version(conn)

    async def check_schema(self) -> None:
        """Raise MigrationError naming the fix unless the schema is up to date."""
        self._require(await self.schema_version())

    def _require(self, current: int) -> None:
        """Raise MigrationError unless schema version `current` is this release's latest."""
        latest = self.latest_version(PACKAGE)
        if current < latest:
            raise MigrationError(
                f"the database at {self.display_url} (schema {self.schema!r}) is at Baton schema version "
                f"{current}, this Baton needs {latest}: run `baton migrate --url {self.display_url}"
                f"{' --schema ' + self.schema if self.schema != 'public' else ''}` or `await app.migrate()`"
            )
