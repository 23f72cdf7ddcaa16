"""Fixtures: every behavioural test runs against both engines (a real PostgreSQL database
created for the session, and a fresh SQLite file per test)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

import baton
from baton.telemetry.logging import detach_default_logger

sys.path.insert(0, str(Path(__file__).parent))
import pg
from polling import wait_for  # noqa: F401 - tests import it from conftest

BATON_TABLES = (
    "baton_jobs, baton_producers, baton_leaders, baton_workflows, workflow_nodes, baton_workflow_deps, "
    "workflow_completions, workflow_step_stats, workflow_debug_logs, baton_cron, "
    "baton_rate_window, baton_usage"
)
# The workflow tables WorkflowHealth prunes (its ("baton", "plugin", "pruned") counts per table).
WORKFLOW_TABLES = (
    "workflow_nodes",
    "baton_workflow_deps",
    "workflow_step_stats",
    "workflow_debug_logs",
    "baton_usage",
    "workflow_completions",
    "baton_workflows",
)


@pytest.fixture(scope="session")
def pg_url() -> Any:
    """A migrated PostgreSQL database for this test session, dropped at the end."""
    url, name = pg.create_database()
    app = baton.Baton(url, plugins=[], log_events=False)
    asyncio.run(app.migrate())
    yield url
    pg.drop_database(name)


def truncate(url: str) -> None:
    """Empty Baton's tables (DELETE: much faster than TRUNCATE on tables this small)."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for table in BATON_TABLES.split(","):
            conn.execute(f"DELETE FROM {table.strip()}")


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database URL of one engine, empty and migrated."""
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        truncate(url)
        return url
    url = f"sqlite:///{tmp_path}/baton.db"
    asyncio.run(baton.Baton(url, plugins=[], log_events=False).migrate())
    return url


@pytest.fixture
def engine_name(db_url: str) -> str:
    return "postgres" if db_url.startswith("postgres") else "sqlite"


@pytest.fixture
async def make_app(db_url: str) -> AsyncIterator[Callable[..., baton.Baton]]:
    """Build apps on the test database; every app is stopped/closed after the test."""
    apps: list[baton.Baton] = []

    def factory(**options: Any) -> baton.Baton:
        options.setdefault("plugins", [])
        options.setdefault("log_events", False)
        app = baton.Baton(db_url, **options)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        with contextlib.suppress(Exception):
            if app.running:
                await app.stop()
            else:
                await app.close()


@pytest.fixture
async def app(make_app: Callable[..., baton.Baton]) -> baton.Baton:
    """An app with the `default` queue, not started."""
    return make_app(queues={"default": 10})


@pytest.fixture(autouse=True)
def _quiet_logging() -> None:
    detach_default_logger()


@pytest.fixture
def events() -> Any:
    """Collect telemetry events: `events.attach(event)`, then `events.of(event)`."""

    class Collector:
        def __init__(self) -> None:
            self.items: list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]] = []
            self.ids: list[str] = []

        def attach(self, *evs: tuple[str, ...]) -> Collector:
            hid = f"test-{id(self)}-{len(self.ids)}"
            baton.telemetry.attach_many(hid, evs, lambda e, m, md: self.items.append((e, dict(m), dict(md))))
            self.ids.append(hid)
            return self

        def of(self, event: tuple[str, ...]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
            return [(m, md) for e, m, md in self.items if e == event]

    collector = Collector()
    yield collector
    for hid in collector.ids:
        baton.telemetry.detach(hid)


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PYTHONHASHSEED", "0")


# --------------------------------------------------------------------------- real node processes


@pytest.fixture
def side(db_url: str) -> str:
    """`db_url` with the side tables real node processes record their executions in (heal_nodes)."""
    import heal_nodes

    heal_nodes.create_side_tables(db_url)
    return db_url


@pytest.fixture
def spawn(tmp_path: Path) -> Any:
    """Start node subprocesses (`heal_nodes.NodeProcess`): `spawn(mode, url, **options)`; each is
    closed after the test, its stderr kept in the test's tmp_path."""
    from heal_nodes import NodeProcess

    started: list[NodeProcess] = []

    def start(mode: str, url: str, **options: Any) -> NodeProcess:
        proc = NodeProcess(mode, url, log_path=tmp_path / f"node-{len(started)}.log", **options)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()
