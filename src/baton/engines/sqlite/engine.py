"""SQLite engine: one connection per process owned by one thread, WAL mode, `BEGIN IMMEDIATE`
so exactly one writer holds the lock at a time (across processes too), and a polled
`baton_notices` table standing in for LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from ..._tasks import cancel_and_wait, watch
from ...errors import DatabaseUnavailable, MigrationError, ValidationError
from ..base import Conn, Engine, Listener, NotifyHandler, Op, P, Queries, Row, T, drive, migration_files

log = logging.getLogger("baton.engine")

PACKAGE = __package__ or "baton.engines.sqlite"


def parse_path(url: str) -> str:
    """`sqlite:///relative.db` -> `relative.db`; `sqlite:////abs.db` -> `/abs.db`."""
    if not url.startswith("sqlite:"):
        raise ValidationError("url", f"not an SQLite URL: {url!r} (expected sqlite:///path/to.db)")
    rest = url[len("sqlite:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    if rest.startswith("/"):
        rest = rest[1:]
    if "?" in rest:
        rest = rest.split("?", 1)[0]
    if not rest:
        raise ValidationError("url", f"{url!r} names no file; use e.g. sqlite:///baton.db")
    return rest


def _adapt(value: Any) -> Any:
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, separators=(",", ":"), default=str)
    if isinstance(value, datetime):
        return value.timestamp()
    return value


class _DecimalSum:
    """The `baton_decimal_sum(text)` aggregate: an exact sum of decimal numbers stored as TEXT
    (costs), returned as TEXT; NULL when every value is NULL. SQLite's own sum() would go
    through REAL and round."""

    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: Any) -> None:
        if value is not None:
            number = Decimal(str(value))
            self.total = number if self.total is None else self.total + number

    def finalize(self) -> str | None:
        return None if self.total is None else format(self.total, "f")


_STRING: Final = json.JSONEncoder(ensure_ascii=False).encode
_PARSE: Final = json.JSONDecoder(parse_float=Decimal).decode


def _jsonb_key(item: tuple[str, Any]) -> tuple[int, bytes]:
    raw = item[0].encode("utf-8", "surrogatepass")
    return len(raw), raw


def jsonb_text(value: Any) -> str:
    """`value` (parsed with `Decimal` for non-integers) written as PostgreSQL prints a jsonb
    value: object keys shortest first, then bytewise; `", "` and `": "` between items; numbers
    as `numeric` prints them (`1.50` stays `1.50`, `1e2` is `100`, no `-0`); strings escaped
    like json.dumps(ensure_ascii=False), which escapes the same characters jsonb does."""
    kind = type(value)
    if kind is str:
        return _STRING(value)
    if kind is dict:
        items = sorted(value.items(), key=_jsonb_key) if len(value) > 1 else value.items()
        return "{" + ", ".join([_STRING(k) + ": " + jsonb_text(v) for k, v in items]) + "}"
    if kind is int:
        return str(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is list:
        return "[" + ", ".join([jsonb_text(v) for v in value]) + "]"
    if kind is Decimal and value.is_finite():
        return format(value.copy_abs() if value.is_zero() else value, "f")
    return _STRING(str(value))  # NaN or Infinity (never written by Baton): never equal to a number


@functools.lru_cache(maxsize=64)
def _partition_spec(fields: str | None, keys: str | None) -> tuple[bool, bool, tuple[str, ...]]:
    field_list = json.loads(fields) if fields else []
    key_list = tuple(json.loads(keys) if keys else ())
    return "worker" in field_list, "args" in field_list, key_list


def partition_key(worker: str | None, args: str | None, fields: str | None, keys: str | None) -> str:
    """`_partition_key`, remembered for short args: a partitioned fetch computes the key of the
    same first available jobs at every turn until they start."""
    if args is not None and len(args) <= 512:
        return _recent_partition_key(worker, args, fields, keys)
    return _partition_key(worker, args, fields, keys)


def _partition_key(worker: str | None, args: str | None, fields: str | None, keys: str | None) -> str:
    """The SQL function `baton_partition_key(worker, args, fields, keys)`: the key of a job's
    partition under a limit, the same text PostgreSQL's `baton_partition_key` (migration 004)
    gives for the same job. A JSON array: the worker when `fields` has "worker", then, when it
    has "args", the value of each of `keys` (null when missing) or, without keys, the whole
    args. Values are normalised like jsonb, so args equal as JSON objects share a partition
    whatever their key order, and `true` and `1` do not. `fields` and `keys` are JSON arrays."""
    by_worker, by_args, key_names = _partition_spec(fields, keys)
    parts = [_STRING(worker) if worker is not None else "null"] if by_worker else []
    if by_args:
        try:
            value = _PARSE(args) if args is not None else None
            if key_names:
                obj = value if isinstance(value, dict) else {}
                parts.extend([jsonb_text(obj.get(k)) for k in key_names])
            else:
                parts.append(jsonb_text(value))
        except (ValueError, RecursionError):
            # Not JSON, or nested too deep (neither is written by Baton): the text itself, as
            # an exception here would fail every fetch of the queue.
            parts.append(_STRING(args))
    return "[" + ", ".join(parts) + "]"


_recent_partition_key: Final = functools.lru_cache(maxsize=4096)(_partition_key)


def split_statements(script: str) -> list[str]:
    """Split an SQL script into complete statements (sqlite3 runs one per execute)."""
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip() and not all(ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()):
        statements.append(buf.strip())
    return statements


class SqliteConn:
    """`Conn` over a sqlite3 connection (blocking: operations never suspend)."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, queries: Queries) -> None:
        self._conn, self._queries = conn, queries
        self.round_trips = 0

    def _execute(self, query: str, params: Mapping[str, Any] | None) -> sqlite3.Cursor | None:
        text = self._queries.get(query)
        if text is None:
            return None
        adapted = {k: _adapt(v) for k, v in params.items()} if params else {}
        self.round_trips += 1
        return self._conn.execute(text, adapted)

    async def fetch(self, query: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        cur = self._execute(query, params)
        if cur is None or cur.description is None:
            return []
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    async def fetchone(self, query: str, params: Mapping[str, Any] | None = None) -> Row | None:
        rows = await self.fetch(query, params)
        return rows[0] if rows else None

    async def execute(self, query: str, params: Mapping[str, Any] | None = None) -> int:
        cur = self._execute(query, params)
        if cur is None:
            return 0
        if cur.description is not None:
            return len(cur.fetchall())
        return max(cur.rowcount, 0)

    async def notify(self, channel: str, payloads: list[str]) -> None:
        if payloads:
            await self.execute("notify", {"channel": channel, "payloads": payloads})

    def channel(self, name: str) -> str:
        return name

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    async def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        marks = ", ".join("?" for _ in columns)
        statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        self._conn.executemany(statement, ([_adapt(v) for v in row] for row in rows))
        self.round_trips += 1


class _SqliteListener:
    """Polls `baton_notices` for rows newer than the last one seen."""

    def __init__(self, engine: SqliteEngine, handler: NotifyHandler, interval: float) -> None:
        self._engine, self._handler, self._interval = engine, handler, interval
        self._task: asyncio.Task[None] | None = None
        self._last = 0

    async def start(self) -> None:
        self._last = await self._engine.run(_last_notice)
        self._task = watch(asyncio.create_task(self._run(), name="baton-notice-poller"))

    async def _run(self) -> None:
        polls = 0
        while True:
            await asyncio.sleep(self._interval)
            polls += 1
            try:
                rows = await self._engine.run(_read_notices, self._last, polls % 600 == 0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("baton notice poll failed: %s", exc)
                continue
            for row in rows:
                self._last = max(self._last, row["id"])
                try:
                    self._handler(row["channel"], row["payload"])
                except Exception:
                    log.exception("baton notification handler failed for %s", row["channel"])

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None


async def _last_notice(conn: Conn) -> int:
    row = await conn.fetchone("last_notice")
    return int(row["id"]) if row and row["id"] is not None else 0


async def _read_notices(conn: Conn, after: int, prune: bool) -> list[Row]:
    if prune:
        await conn.execute("prune_notices", {"max_age": 600})
    return await conn.fetch("read_notices", {"after": after})


class SqliteEngine(Engine):
    """SQLite: the embedded default (a file, no server)."""

    dialect = "sqlite"

    def __init__(self, url: str, *, busy_timeout: float = 5.0, notice_interval: float = 0.25) -> None:
        self.url = url
        self.path = parse_path(url)
        self.busy_timeout = busy_timeout
        self.notice_interval = notice_interval
        self.queries = Queries(PACKAGE)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._thread_id: int | None = None
        self._lock = threading.Lock()

    # -- the database thread ----------------------------------------------------------

    def _check_path(self) -> None:
        if self.path == ":memory:":
            return
        path = Path(self.path)
        directory = path.parent.resolve() if str(path.parent) else Path.cwd()
        if not directory.is_dir():
            raise DatabaseUnavailable(
                f"SQLite database {self.path!r}: directory {str(directory)!r} does not exist; "
                f"create it (mkdir -p {directory}) or choose another path in BATON_DATABASE_URL"
            )
        if path.exists():
            if path.is_dir():
                raise DatabaseUnavailable(f"SQLite database {self.path!r} is a directory; name a file instead")
            if not os.access(path, os.R_OK | os.W_OK):
                raise DatabaseUnavailable(
                    f"SQLite database {self.path!r} is read-only for this user; fix its permissions "
                    f"(chmod u+rw {path}) or choose another path"
                )
        if not os.access(directory, os.W_OK | os.X_OK):
            raise DatabaseUnavailable(
                f"SQLite database {self.path!r}: directory {str(directory)!r} is not writable "
                "(SQLite needs to create its -wal and -shm files there); fix its permissions or choose another path"
            )

    def _connect(self) -> sqlite3.Connection:
        self._check_path()
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise DatabaseUnavailable(f"cannot open SQLite database {self.path!r}: {exc}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.create_aggregate("baton_decimal_sum", 1, _DecimalSum)  # type: ignore[arg-type]
            conn.create_function("baton_partition_key", 4, partition_key, deterministic=True)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            if self.path != ":memory:":
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    log.warning("SQLite database %s is in %s mode, not WAL", self.path, mode)
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if "locked" in str(exc):
                raise DatabaseUnavailable(
                    f"SQLite database {self.path!r} is locked by another process: {exc}"
                ) from None
            raise DatabaseUnavailable(
                f"{self.path!r} is not a usable SQLite database ({exc}); it may be corrupt or another "
                "kind of file: move it aside or point BATON_DATABASE_URL at another path"
            ) from None
        return conn

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _in_db_thread(self) -> bool:
        return self._thread_id == threading.get_ident()

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="baton-sqlite", initializer=self._mark_thread
                )
            return self._executor

    def _mark_thread(self) -> None:
        self._thread_id = threading.get_ident()

    def _transaction(self, op: Op[Any, T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        conn = self._connection()
        for attempt in range(5):
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    if attempt < 4:
                        continue
                    raise DatabaseUnavailable(
                        f"SQLite database {self.path!r} stayed locked by another writer for "
                        f"{5 * self.busy_timeout:g}s; is a process stuck holding a transaction?"
                    ) from None
                raise self._translate(exc) from None
            try:
                result = drive(op(SqliteConn(conn, self.queries), *args, **kwargs))
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        raise AssertionError("unreachable")

    def _translate(self, exc: sqlite3.Error) -> Exception:
        text = str(exc)
        if "readonly" in text or "read-only" in text:
            return DatabaseUnavailable(f"SQLite database {self.path!r} is read-only: {text}")
        if "no such table" in text:
            return MigrationError(
                f"the SQLite database {self.path!r} has no Baton tables: run `baton migrate --url {self.url}` "
                "or `await app.migrate()`"
            )
        return exc

    def _blocking(self, op: Op[Any, T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        try:
            return self._transaction(op, args, kwargs)
        except sqlite3.OperationalError as exc:
            raise self._translate(exc) from exc

    # -- Engine ------------------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool(), self._connection)

    async def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(executor, shut)
        executor.shutdown(wait=True)

    def close_sync(self) -> None:
        """Close from sync code (after `run_sync` use without an event loop)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.submit(lambda: self._conn.close() if self._conn else None).result()
            self._conn = None
            executor.shutdown(wait=True)

    async def run(self, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), functools.partial(self._blocking, op, args, kwargs))

    def run_sync(self, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._in_db_thread():
            return self._blocking(op, args, kwargs)
        return self._pool().submit(self._blocking, op, args, kwargs).result()

    async def run_on(self, connection: Any, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return self.run_on_sync(connection, op, *args, **kwargs)

    def run_on_sync(self, connection: Any, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if not isinstance(connection, sqlite3.Connection):
            raise ValidationError("conn", "must be a sqlite3.Connection to the same database file")
        if not connection.in_transaction:
            # sqlite3 only opens a transaction implicitly before plain INSERT/UPDATE/DELETE; ours
            # start with WITH, so begin one, or the job would commit on its own.
            connection.execute("BEGIN")
        try:
            return drive(op(SqliteConn(connection, self.queries), *args, **kwargs))  # type: ignore[arg-type]
        except sqlite3.OperationalError as exc:  # "no such table": the MigrationError every call gives
            translated = self._translate(exc)
            if translated is exc:
                raise
            raise translated from None

    async def listen(self, handler: NotifyHandler, on_reconnect: Callable[[], None] | None = None) -> Listener:
        listener = _SqliteListener(self, handler, self.notice_interval)
        await listener.start()
        return listener

    async def migrate(self) -> list[int]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), self._migrate_blocking)

    def _migrate_blocking(self) -> list[int]:
        conn = self._connection()
        applied: list[int] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS baton_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0))"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM baton_migrations")}
            for version, name, text in migration_files(PACKAGE):
                if version in done:
                    continue
                for statement in split_statements(text):
                    conn.execute(statement)
                conn.execute("INSERT INTO baton_migrations (version, name) VALUES (?, ?)", (version, name))
                applied.append(version)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return applied

    async def schema_version(self) -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), self._version_blocking)

    def _version_blocking(self) -> int:
        try:
            row = self._connection().execute("SELECT coalesce(max(version), 0) FROM baton_migrations").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0
            raise
        return int(row[0])

    async def check_schema(self) -> None:
        """Raise MigrationError naming the fix unless the schema is up to date."""
        current, latest = await self.schema_version(), self.latest_version(PACKAGE)
        if current < latest:
            raise MigrationError(
                f"the SQLite database {self.path!r} is at Baton schema version {current}, this Baton needs "
                f"{latest}: run `baton migrate --url {self.url}` or `await app.migrate()`"
            )
