"""Fixtures of the fault-injection suite: fresh databases with evidence probes (dropped
afterwards), and the rule that keeps `slow` scenarios out of the default run."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from harness import FaultDatabase, create_fault_database, drop_fault_database


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`slow` scenarios run only when asked for (`-m slow`, or BATON_SLOW=1)."""
    if "slow" in (config.getoption("-m") or "") or os.environ.get("BATON_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow scenario: run with -m slow or BATON_SLOW=1")
    for item in items:
        if "slow" in item.keywords and Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(skip)


@pytest.fixture
async def fault_db(tmp_path: Path) -> AsyncIterator[Callable[[str], Awaitable[FaultDatabase]]]:
    """`await fault_db("postgres" | "sqlite")`: a new migrated database with the evidence probes
    installed; PostgreSQL databases are dropped (with FORCE) after the test."""
    made: list[FaultDatabase] = []

    async def make(engine: str) -> FaultDatabase:
        db = await create_fault_database(engine, tmp_path / f"{engine}-{len(made)}")
        made.append(db)
        return db

    yield make
    for db in made:
        drop_fault_database(db)
