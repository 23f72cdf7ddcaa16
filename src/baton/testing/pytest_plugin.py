"""The pytest plugin (entry point `pytest11: baton`): a `baton_app` fixture on a fresh database
per test — an SQLite file by default, or a PostgreSQL schema of its own when `--baton-url` or
$BATON_TEST_DATABASE_URL names a PostgreSQL server — and the `@pytest.mark.baton(...)` marker.

    @pytest.mark.baton(mode="inline", queues={"default": 5})
    def test_signup(baton_app): ...

Nothing leaks between tests: each one gets its own database (file or schema), dropped after it,
and any testing mode or started node it left behind is ended."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..app import Baton
from ..errors import ValidationError
from .modes import Mode, inline, manual

ENV_URL = "BATON_TEST_DATABASE_URL"
_APP = pytest.StashKey[Baton]()

try:
    import pytest_asyncio
except ImportError:  # async tests need an async plugin anyway; sync tests work without one
    pytest_asyncio = None  # type: ignore[assignment]

if pytest_asyncio is not None:
    try:  # loop_scope: pytest-asyncio >= 0.24; older ones run fixtures on the test's loop anyway
        _async_fixture: Any = pytest_asyncio.fixture(loop_scope="function")
    except TypeError:
        _async_fixture = pytest_asyncio.fixture

    @_async_fixture
    async def _baton_app_async_teardown(request: pytest.FixtureRequest) -> Any:
        """For async tests: stop/close `baton_app` on the test's own event loop before that loop
        ends, so a node left started cannot outlive its loop (or hang the loop's shutdown)."""
        yield
        app = request.node.stash.get(_APP, None)
        if app is not None:
            if app.running:
                await app.stop(grace=0)
            else:
                await app.close()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("baton")
    group.addoption(
        "--baton-url",
        default=None,
        help=f"database for the baton_app fixture: a PostgreSQL URL (one schema per test) or sqlite "
        f"(a file per test, the default); also ${ENV_URL}",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "baton(mode=None, **options): options of the baton_app fixture's Baton (queues=, plugins=, ...) "
        "and its testing mode ('inline' or 'manual')",
    )


def _close(app: Baton) -> None:
    """Stop or close the app from synchronous teardown (its test's event loop may be gone)."""

    async def stop() -> None:
        await app.stop(grace=0)

    if app.running:
        # A node the test left started: its event loop has usually ended with the test.
        with contextlib.suppress(Exception):
            asyncio.run(asyncio.wait_for(stop(), 5))
    with contextlib.suppress(Exception):
        asyncio.run(asyncio.wait_for(app.close(), 30))


@pytest.fixture
def baton_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database URL of this test's `baton_app`: `--baton-url` / $BATON_TEST_DATABASE_URL
    when it is PostgreSQL, else an SQLite file in the test's tmp_path."""
    url = request.config.getoption("--baton-url") or os.environ.get(ENV_URL) or ""
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return url
    return f"sqlite:///{tmp_path}/baton.db"


@pytest.fixture
def baton_app_options() -> dict[str, Any]:
    """Options of `baton_app`'s Baton; override this fixture (or use the marker) to change them."""
    return {"queues": {"default": 10}, "plugins": [], "log_events": False}


@pytest.fixture
def baton_app(request: pytest.FixtureRequest, baton_url: str, baton_app_options: dict[str, Any]) -> Iterator[Baton]:
    """A migrated Baton app on a database of its own (SQLite file or PostgreSQL schema),
    closed and dropped after the test. `@pytest.mark.baton(mode="inline", **options)` sets
    its testing mode and Baton options."""
    options = dict(baton_app_options)
    mode_name = None
    marker = request.node.get_closest_marker("baton")
    if marker is not None:
        if marker.args:
            raise ValidationError("pytest.mark.baton", "takes keyword arguments only: mode=, queues=, ...")
        options.update(marker.kwargs)
        mode_name = options.pop("mode", None)
    if mode_name not in (None, "inline", "manual"):
        raise ValidationError("mode", f"must be 'inline' or 'manual', got {mode_name!r}")
    schema = None
    if not baton_url.startswith("sqlite"):
        schema = f"baton_test_{uuid.uuid4().hex[:12]}"
        options["schema"] = schema
    app = Baton(baton_url, **options)
    request.node.stash[_APP] = app
    if pytest_asyncio is not None and inspect.iscoroutinefunction(getattr(request, "function", None)):
        request.getfixturevalue("_baton_app_async_teardown")
    mode: Mode | None = None
    try:
        asyncio.run(app.migrate())
        if mode_name is not None:
            mode = inline(app) if mode_name == "inline" else manual(app)
            mode.__enter__()
        yield app
    finally:
        if mode is not None:
            mode._leave()
        _close(app)
        if schema is not None:
            _drop_schema(baton_url, schema)


def _drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
