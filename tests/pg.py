"""Find or start a real PostgreSQL for the test suite: $BATON_TEST_DATABASE_URL, else the
server at 127.0.0.1:5432, else a private server started with the `pgserver` package. The
suite never skips database tests."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg

_server = None


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True):
            return True
    except psycopg.Error:
        return False


def server_url() -> str:
    """A URL of a maintenance database on a running server (starting one if needed)."""
    global _server
    explicit = os.environ.get("BATON_TEST_DATABASE_URL")
    if explicit:
        if not _reachable(explicit):
            raise RuntimeError(f"BATON_TEST_DATABASE_URL={explicit} is not reachable")
        return explicit
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    if _reachable(local):
        return local
    try:
        import pgserver  # a real PostgreSQL server from PyPI, for machines without one
    except ImportError:
        raise RuntimeError(
            "no PostgreSQL at 127.0.0.1:5432 and the pgserver package is not installed (the test "
            "extra installs it on Python 3.11 and 3.12; it has no wheels for newer ones): start a "
            "PostgreSQL server there, or set BATON_TEST_DATABASE_URL to one whose role may CREATE DATABASE"
        ) from None

    data = os.path.join(tempfile.gettempdir(), "baton-test-pgdata")
    _server = pgserver.get_server(data, cleanup_mode="stop")
    return _server.get_uri()


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def create_database(prefix: str = "baton_test") -> tuple[str, str]:
    """Create a fresh database; returns (url, name)."""
    base = server_url()
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(base, name), name


def drop_database(name: str) -> None:
    base = server_url()
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def client_backends(url: str, like: str = "%") -> int:
    """How many other client backends are connected to the database of `url` (whose last query
    is LIKE `like`), counted once those that are closing have left: a closed connection's backend
    leaves pg_stat_activity a moment after its client returned."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND backend_type = 'client backend' AND query ILIKE %s"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        counts: list[int] = []
        while len(counts) < 50 and not (len(counts) >= 3 and counts[-1] == counts[-2] == counts[-3]):
            row = conn.execute(query, [like]).fetchone()
            counts.append(row[0] if row else 0)
            time.sleep(0.02)
        return counts[-1]
